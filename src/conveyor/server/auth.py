"""Bearer-token authentication and scope checks for the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.server.tokens import Identity, authenticate

bearer = HTTPBearer(auto_error=False, description="A token from `conveyor token create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(scope: str) -> Callable[..., Identity]:
    """A dependency that admits a request whose token holds `scope` (or one implying it)."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Identity:
        if credentials is None:
            raise HTTPException(401, "missing token: send Authorization: Bearer <token>")
        identity = authenticate(request.app.state.conveyor.store, credentials.credentials)
        if identity is None:
            raise HTTPException(401, "unknown or revoked token")
        if not identity.allows(scope):
            raise HTTPException(403, f"this token lacks the {scope} scope")
        return identity

    return check
