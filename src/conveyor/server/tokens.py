"""API tokens: random 256-bit values shown once; the store keeps only their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from conveyor.errors import ConveyorError, NotFound
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

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expand(scopes: list[str]) -> frozenset[str]:
    granted = set(scopes)
    for scope in scopes:
        granted |= IMPLIES.get(scope, set())
    return frozenset(granted)


def create_token(store: Store, name: str, scopes: list[str], user: str | None = None) -> str:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ConveyorError(
            f"unknown scope {', '.join(unknown)}" if unknown else "give at least one scope",
            hint=f"scopes: {', '.join(SCOPES)}",
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
            )
        )
        w.emit("token.created", name=name, scopes=sorted(set(scopes)), user=user)
    return token


def authenticate(store: Store, token: str) -> Identity | None:
    """The identity behind a presented token, or None (unknown or revoked)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with store.session() as session:
        row = session.scalar(select(Token).where(Token.token_hash == _digest(token)))
        if row is None or row.revoked_at is not None:
            return None
        return Identity(row.id, row.name, row.user, expand(list(row.scopes)))


def list_tokens(store: Store) -> list[dict[str, Any]]:
    with store.session() as session:
        return [
            {
                "name": t.name,
                "prefix": t.prefix,
                "scopes": list(t.scopes),
                "user": t.user,
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
            w.emit("token.revoked", name=name)
