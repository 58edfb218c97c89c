"""API tokens: random 256-bit values shown once; the store keeps only their SHA-256.

A token (and a user's session) may be limited to services and environments: its scopes then
act on those only. Reads stay global (a token that may read reads every service); what a limit
stops is triggering, promoting, rolling back, holding, cancelling and approving elsewhere. A
runner token may also be limited to labels: its runners may claim no others.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from conveyor.engine.credentials import check_names
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.store.db import Store
from conveyor.store.models import Token, utcnow

SCOPES = ("read", "trigger", "approve", "admin", "runner")
# What each scope grants besides itself.
IMPLIES = {
    "admin": {"read", "trigger", "approve", "runner"},
    "trigger": {"read"},
    "approve": {"read"},
    "runner": set(),
}
PREFIX = "cvy_"


@dataclass(frozen=True)
class Identity:
    token_id: int
    name: str
    user: str | None
    scopes: frozenset[str]
    # Empty: every one.
    services: frozenset[str] = field(default_factory=frozenset)
    environments: frozenset[str] = field(default_factory=frozenset)
    labels: frozenset[str] = field(default_factory=frozenset)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def limited(self) -> bool:
        return bool(self.services or self.environments)

    def may_act_on(self, service: str, environment: str | None = None) -> bool:
        if self.services and service not in self.services:
            return False
        return not (self.environments and environment and environment not in self.environments)

    def limits(self) -> str:
        """The limits in words, e.g. "service shop, environment staging"."""
        parts = []
        for what, names in (("service", self.services), ("environment", self.environments)):
            if names:
                parts.append(f"{what}{'s' if len(names) > 1 else ''} {', '.join(sorted(names))}")
        return ", ".join(parts) or "no service or environment"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expand(scopes: list[str]) -> frozenset[str]:
    granted = set(scopes)
    for scope in scopes:
        granted |= IMPLIES.get(scope, set())
    return frozenset(granted)


def create_token(
    store: Store,
    name: str,
    scopes: list[str],
    user: str | None = None,
    *,
    services: Iterable[str] = (),
    environments: Iterable[str] = (),
    labels: Iterable[str] = (),
) -> str:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ConveyorError(
            f"unknown scope {', '.join(unknown)}" if unknown else "give at least one scope",
            hint=f"scopes: {', '.join(SCOPES)}",
        )
    limits = {
        "services": check_names("service", services),
        "environments": check_names("environment", environments),
        "labels": check_names("label", labels),
    }
    if limits["labels"] and "runner" not in scopes:
        raise ConveyorError(
            "--label limits runner tokens only", hint="add --scope runner, or drop --label"
        )
    token = PREFIX + secrets.token_urlsafe(32)
    with store.write() as w:
        if w.session.scalar(select(Token.id).where(Token.name == name)) is not None:
            raise ConveyorError(f"a token named {name!r} exists already", hint="pick another name")
        w.session.add(
            Token(
                name=name,
                token_hash=_digest(token),
                prefix=token[: len(PREFIX) + 4],
                scopes=sorted(set(scopes)),
                user=user,
                created_at=utcnow(),
                **limits,
            )
        )
        w.emit(
            EventType.TOKEN_CREATED,
            name=name,
            scopes=sorted(set(scopes)),
            user=user,
            services=limits["services"],
            environments=limits["environments"],
            labels=limits["labels"],
        )
    return token


def create_hook_token(
    store: Store, services: list[str], replaces: str | None = None
) -> tuple[str, str, str | None]:
    """A git hook's own token: scope trigger, limited to ``services``, of no user (the pushers
    it names are claims). Revokes ``replaces`` if it is the hook token of the same services.
    Returns (token, its name, the name of the token revoked)."""
    names = sorted(set(services))
    name = f"hook-{'-'.join(names)}"[:180] + f"-{secrets.token_hex(4)}"
    token = create_token(store, name, ["trigger"], services=names)
    old = authenticate(store, replaces) if replaces else None
    # Only a hook token of the same services: the caller's own or another token stays.
    revoked = (
        old.name
        if old is not None
        and old.name.startswith("hook-")
        and old.user is None
        and old.scopes == expand(["trigger"])
        and sorted(old.services) == names
        else None
    )
    if revoked is not None:
        revoke_token(store, revoked)
    return token, name, revoked


def authenticate(store: Store, token: str) -> Identity | None:
    """The identity behind a presented token, or None (unknown or revoked)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with store.session() as session:
        row = session.scalar(select(Token).where(Token.token_hash == _digest(token)))
        if row is None or row.revoked_at is not None:
            return None
        return Identity(
            row.id,
            row.name,
            row.user,
            expand(list(row.scopes)),
            frozenset(row.services or ()),
            frozenset(row.environments or ()),
            frozenset(row.labels or ()),
        )


def list_tokens(store: Store) -> list[dict[str, Any]]:
    with store.session() as session:
        return [
            {
                "name": t.name,
                "prefix": t.prefix,
                "scopes": list(t.scopes),
                "user": t.user,
                "services": list(t.services or ()),
                "environments": list(t.environments or ()),
                "labels": list(t.labels or ()),
                "created_at": t.created_at,
                "revoked_at": t.revoked_at,
            }
            for t in session.scalars(select(Token).order_by(Token.id))
        ]


def revoke_token(store: Store, name: str) -> None:
    with store.write() as w:
        token = w.session.scalar(select(Token).where(Token.name == name))
        if token is None:
            raise NotFound(f"there is no token named {name!r}", hint="`conveyor token list`")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            w.emit(EventType.TOKEN_REVOKED, name=name)
