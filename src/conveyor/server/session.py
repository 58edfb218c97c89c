"""Browser sessions for the web UI: sign in with a token or a user's password, get an
HttpOnly cookie; the store keeps only the cookie's SHA-256 (docs/decisions/0008-web-ui.md).

A session lasts IDLE after its last use, and never longer than MAX after sign-in. A token
session ends when its token is revoked; a password session when the user's password or scopes
change. Cookie-authenticated requests that change something must carry `X-Conveyor-CSRF: 1`
(checked in auth.require), which a cross-site form cannot send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections import deque
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, select

from conveyor.engine.credentials import check_password, set_credentials
from conveyor.events import EventType
from conveyor.server.auth import require
from conveyor.server.schemas.access import Me
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.scoping import unlimited
from conveyor.server.tokens import PREFIX, Identity, authenticate, expand
from conveyor.store.db import Store
from conveyor.store.models import Token, User, WebSession, utcnow

router = APIRouter(responses=ERRORS)

COOKIE = "conveyor_session"
CSRF_HEADER = "X-Conveyor-CSRF"
IDLE = dt.timedelta(hours=12)
MAX = dt.timedelta(days=7)
# last_seen_at (and with it the idle expiry) is written at most this often per session.
TOUCH_EVERY = dt.timedelta(minutes=1)
SESSION_PREFIX = "cvs_"
# Failed sign-ins one address may make within the window before it must wait.
THROTTLE_FAILURES = 10
THROTTLE_WINDOW = 600.0
# Addresses tracked before those with no recent failure are forgotten.
THROTTLE_ADDRESSES = 10_000


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def identity_from_cookie(store: Store, value: str) -> Identity | None:
    """Who holds this session cookie, or None (unknown, expired, or its token revoked)."""
    if not value.startswith(SESSION_PREFIX) or len(value) > 200:
        return None
    now = utcnow()
    with store.session() as session:
        row = session.scalar(select(WebSession).where(WebSession.digest == digest(value)))
        if row is None or _aware(row.expires_at) <= now:
            return None
        name = row.user or ""
        token_id = 0
        if row.token_id is not None:
            token = session.get(Token, row.token_id)
            if token is None or token.revoked_at is not None:
                return None
            name, token_id = token.name, token.id
        identity = Identity(
            token_id,
            name,
            row.user,
            expand(list(row.scopes)),
            frozenset(row.services or ()),
            frozenset(row.environments or ()),
        )
        stale = now - _aware(row.last_seen_at) > TOUCH_EVERY
        session_id, created = row.id, _aware(row.created_at)
    if stale:
        with store.write() as w:
            w.session.execute(
                WebSession.__table__.update()  # type: ignore[attr-defined]
                .where(WebSession.id == session_id)
                .values(last_seen_at=now, expires_at=min(now + IDLE, created + MAX))
            )
    return identity


def describe(identity: Identity, via: str) -> dict[str, Any]:
    """GET /me's answer: who, with which scopes, and what that lets them do."""
    scopes = sorted(identity.scopes)
    return {
        "user": identity.user,
        "name": identity.user or identity.name,
        "token": identity.name if identity.token_id else None,
        "via": via,
        "scopes": scopes,
        # What those scopes act on; empty: every service / environment.
        "services": sorted(identity.services),
        "environments": sorted(identity.environments),
        "can": {scope: identity.allows(scope) for scope in ("read", "trigger", "approve", "admin")},
    }


class SignIn(BaseModel):
    token: str | None = Field(None, max_length=200)
    user: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=1024)


def _failures(request: Request) -> deque[float]:
    """This client's failed sign-ins still inside the throttle's window (this server's)."""
    table: dict[str, deque[float]] = request.app.state.__dict__.setdefault("signin_failures", {})
    # The connection's peer: uvicorn puts a forwarded address there only for the proxies given
    # to --forwarded-allow-ips, so a client cannot name the address it is counted against.
    client = request.client.host if request.client else "?"
    horizon = time.monotonic() - THROTTLE_WINDOW
    if client not in table and len(table) >= THROTTLE_ADDRESSES:
        # Forget addresses with no failure left in the window, or every address ever seen
        # would stay (an IPv6 client has plenty to try).
        for stale in [a for a, seen in table.items() if not seen or seen[-1] < horizon]:
            del table[stale]
    found = table.setdefault(client, deque())
    while found and found[0] < horizon:
        found.popleft()
    return found


def _throttle(request: Request) -> None:
    """Guessing is slow: after THROTTLE_FAILURES failed sign-ins from one address within the
    window, that address is refused (before any check) until the oldest failure ages out."""
    failed = _failures(request)
    if len(failed) >= THROTTLE_FAILURES:
        wait = int(failed[0] + THROTTLE_WINDOW - time.monotonic()) + 1
        raise HTTPException(
            429,
            f"too many failed sign-ins from this address: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def _refuse(store: Store, request: Request, via: str, who: str | None, message: str) -> NoReturn:
    client = request.client.host if request.client else None
    _failures(request).append(time.monotonic())
    with store.write() as w:
        w.emit(EventType.SESSION_REFUSED, via=via, user=who, client=client, actor=who or "unknown")
    raise HTTPException(401, message)


def _csrf(request: Request) -> None:
    # Signing in and out change state too: a cross-site form must not sign a browser in as
    # someone else (login CSRF).
    if request.headers.get(CSRF_HEADER) != "1":
        raise HTTPException(403, f"send the header {CSRF_HEADER}: 1 with this request")


@router.post("/session", tags=["session"], response_model=Me, responses=errors(429))
def sign_in(request: Request, response: Response, body: SignIn) -> dict[str, Any]:
    """Start a browser session with {"token": ...} or {"user": ..., "password": ...}."""
    _csrf(request)
    _throttle(request)
    store: Store = request.app.state.conveyor.store
    user: str | None
    token_id: int | None
    if body.token is not None:
        via = "token"
        identity = authenticate(store, body.token.strip())
        if identity is None:
            shown = body.token.strip()[: len(PREFIX) + 4] or None
            _refuse(store, request, via, shown, "unknown or revoked token")
        if identity.scopes == {"runner"}:
            raise HTTPException(403, "a runner token cannot sign in to the web UI")
        user, token_id, scopes = identity.user, identity.token_id, sorted(identity.scopes)
        actor = identity.user or f"token:{identity.name}"
        who = identity
    elif body.user is not None and body.password is not None:
        via = "password"
        with store.session() as session:
            found = session.scalar(select(User).where(User.name == body.user))
            stored = found.password_hash if found is not None else None
            user_scopes = list(found.scopes or []) if found is not None else []
            limits = (
                (frozenset(found.services or ()), frozenset(found.environments or ()))
                if found is not None
                else (frozenset[str](), frozenset[str]())
            )
        if not check_password(body.password, stored):
            _refuse(store, request, via, body.user, "wrong user name or password")
        user, token_id, scopes, actor = body.user, None, sorted(user_scopes), body.user
        who = Identity(0, body.user, body.user, expand(scopes), *limits)
    else:
        raise HTTPException(422, 'give {"token": ...} or {"user": ..., "password": ...}')
    value = SESSION_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with store.write() as w:
        w.session.execute(delete(WebSession).where(WebSession.expires_at < now))
        w.session.add(
            WebSession(
                digest=digest(value),
                user=user,
                token_id=token_id,
                scopes=scopes,
                services=sorted(who.services),
                environments=sorted(who.environments),
                created_at=now,
                expires_at=now + IDLE,
                last_seen_at=now,
            )
        )
        w.emit(EventType.SESSION_STARTED, via=via, user=user, actor=actor)
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(MAX.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return describe(who, "session")


@router.delete("/session", status_code=204, tags=["session"])
def sign_out(request: Request) -> Response:
    """End this browser's session (and forget its cookie)."""
    _csrf(request)
    value = request.cookies.get(COOKIE)
    store: Store = request.app.state.conveyor.store
    if value:
        with store.write() as w:
            w.session.execute(delete(WebSession).where(WebSession.digest == digest(value)))
    response = Response(status_code=204)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.get("/me", tags=["session"], response_model=Me)
def me(request: Request, identity: Annotated[Identity, Depends(require("read"))]) -> dict[str, Any]:
    """Who is asking: user, scopes, and what they may do (read, trigger, approve, admin)."""
    via = "token" if request.headers.get("authorization") else "session"
    return describe(identity, via)


class CredentialsIn(BaseModel):
    password: str | None = Field(None, min_length=1, max_length=1024)
    scopes: list[str] | None = None
    # What those scopes act on ([]: every service / environment); unchanged when absent.
    services: list[str] | None = Field(None, max_length=100)
    environments: list[str] | None = Field(None, max_length=100)


@router.put("/users/{name}/credentials", status_code=204, tags=["users"], responses=errors(404))
def put_credentials(
    request: Request,
    name: str,
    body: CredentialsIn,
    identity: Annotated[Identity, Depends(require("admin"))],
) -> Response:
    """Set a user's web sign-in password, scopes and/or the services and environments those
    act on (ends their password sessions)."""
    unlimited(identity, "managing people")
    set_credentials(
        request.app.state.conveyor.store,
        name,
        password=body.password,
        scopes=body.scopes,
        services=body.services,
        environments=body.environments,
        by=identity.user or f"token:{identity.name}",
    )
    return Response(status_code=204)
