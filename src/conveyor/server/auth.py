"""Authentication and scope checks for the API: a Bearer token, or the web UI's session
cookie (which must come with `X-Conveyor-CSRF: 1` on requests that change something)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.server.tokens import Identity, authenticate

bearer = HTTPBearer(auto_error=False, description="A token from `conveyor token create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require(scope: str) -> Callable[..., Identity]:
    """A dependency that admits a request whose token or session holds `scope` (or one
    implying it)."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Identity:
        store = request.app.state.conveyor.store
        if credentials is not None:
            identity = authenticate(store, credentials.credentials)
            if identity is None:
                raise HTTPException(401, "unknown or revoked token")
            if not identity.allows(scope):
                raise HTTPException(403, f"this token lacks the {scope} scope")
            return identity
        from conveyor.server.session import COOKIE, CSRF_HEADER, identity_from_cookie

        cookie = request.cookies.get(COOKIE)
        if not cookie:
            raise HTTPException(
                401, "missing token: send Authorization: Bearer <token>, or sign in"
            )
        identity = identity_from_cookie(store, cookie)
        if identity is None:
            raise HTTPException(401, "your session has ended: sign in again")
        if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
            raise HTTPException(
                403, f"a signed-in browser must send {CSRF_HEADER}: 1 with this request"
            )
        if not identity.allows(scope):
            raise HTTPException(403, f"you are signed in without the {scope} scope")
        return identity

    return check
