"""Users' passwords and scopes, for signing in to the web UI.

Passwords are hashed with scrypt (memory-hard, in the standard library) and a random salt;
the stored form names its parameters so that they can be raised later without a migration.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select

from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.store.db import Store
from conveyor.store.models import User, WebSession, utcnow

# 16 MiB of memory per hash: about 50 ms here, slow enough to make guessing expensive.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
USER_SCOPES = ("read", "trigger", "approve", "admin")
# Service, environment and label names, as the pipeline file and `conveyor service add` allow.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    """True if `password` matches `stored`; compared in constant time."""
    if not stored or len(password) > MAX_PASSWORD:
        # Hash anyway, so that an unknown user takes as long to refuse as a wrong password.
        hash_password(password[:MAX_PASSWORD])
        return False
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ConveyorError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ConveyorError(f"the password is too long: at most {MAX_PASSWORD} characters")


def parse_scopes(values: list[str] | tuple[str, ...]) -> list[str]:
    """Scopes given as repeated and/or comma-separated values; unknown ones are refused."""
    scopes = sorted({s.strip() for v in values for s in v.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in USER_SCOPES]
    if unknown:
        raise ConveyorError(
            f"unknown scope {', '.join(unknown)}", hint=f"scopes: {', '.join(USER_SCOPES)}"
        )
    return scopes


def check_names(kind: str, names: Iterable[str]) -> list[str]:
    """The service, environment or label names of a limit: sorted, each checked."""
    chosen = sorted({n.strip() for n in names if n.strip()})
    bad = [n for n in chosen if not NAME.match(n)]
    if bad:
        raise ConveyorError(
            f"{bad[0]!r} is not a {kind} name",
            hint="letters, digits, '.', '_' and '-', starting with a letter or a digit",
        )
    return chosen


def set_credentials(
    store: Store,
    name: str,
    *,
    password: str | None = None,
    scopes: list[str] | None = None,
    services: list[str] | None = None,
    environments: list[str] | None = None,
    by: str,
) -> None:
    """Set a user's password, scopes and/or the services and environments the scopes act on
    (``[]``: every one; None: unchanged). Any change ends the user's password sessions."""

    if password is not None:
        check_new_password(password)
    if scopes is not None:
        scopes = parse_scopes(scopes)
        if not scopes:
            raise ConveyorError("give at least one scope", hint=f"scopes: {', '.join(USER_SCOPES)}")
    limits: dict[str, list[str]] = {}
    if services is not None:
        limits["services"] = check_names("service", services)
    if environments is not None:
        limits["environments"] = check_names("environment", environments)
    hashed = hash_password(password) if password is not None else None
    with store.write() as w:
        user = w.session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"there is no user named {name!r}", hint="`conveyor user add NAME`")
        changed: dict[str, Any] = {}
        if hashed is not None:
            user.password_hash = hashed
            changed["password_changed"] = True
        if scopes is not None:
            user.scopes = scopes
            changed["scopes"] = scopes
        for key, names in limits.items():
            setattr(user, key, names)
            changed[key] = names
        if hashed is not None or scopes is not None or limits:
            # Sessions carry the scopes they were given: make the user sign in again.
            w.session.execute(
                delete(WebSession).where(WebSession.user == name, WebSession.token_id.is_(None))
            )
        w.emit(
            EventType.USER_CREDENTIALS_CHANGED,
            name=name,
            actor=by,
            at=utcnow().isoformat(),
            **changed,
        )
