"""Pipeline secrets over the API (admin scope): set, list (names only) and remove a service's
secrets, for all its environments or one (`?environment=`). Values go in and never come out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.schemas import access as schemas
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.tokens import Identity
from conveyor.store import vault
from conveyor.store.db import Store
from conveyor.store.models import Service

router = APIRouter(tags=["secrets"], responses=ERRORS)
Admin = Annotated[Identity, Depends(require("admin"))]
Environment = Annotated[
    str | None, Query(max_length=200, description="One environment's secrets; none: every one.")
]


class SecretIn(BaseModel):
    value: str = Field(min_length=1, max_length=vault.MAX_VALUE_CHARS)


class SecretsIn(BaseModel):
    values: dict[str, Annotated[str, Field(min_length=1, max_length=vault.MAX_VALUE_CHARS)]] = (
        Field(min_length=1, max_length=1000)
    )


class _Secrets:
    """What every route here acts on: the secrets of ``service``, of every environment or of
    one (``?environment=``), for an admin whose token's limits are checked by ``allowed``."""

    def __init__(
        self, request: Request, service: str, identity: Admin, environment: Environment = None
    ) -> None:
        self.store: Store = request.app.state.conveyor.store
        self.service = service
        self.identity = identity
        self.environment = environment
        self.by = scoping.who(identity)

    def allowed(self, *, write: bool) -> None:
        scoping.check(self.identity, self.service, self.environment, action="manage the secrets of")
        if write and self.environment is None and self.identity.environments:
            # A service-wide secret reaches every environment, so setting one is not an act on
            # the environments this caller is limited to only.
            raise HTTPException(
                403,
                f"{self.by} is limited to {self.identity.limits()}: a service-wide "
                "secret reaches every environment; give ?environment=",
            )

    def set(self, values: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        """Store ``values`` (all of them, or none); what was stored, and whether the service is
        registered yet (secrets may be set before it is)."""
        self.allowed(write=True)
        done = vault.import_secrets(self.store, self.service, values, self.environment, self.by)
        with self.store.session() as session:
            found = session.scalar(select(Service.id).where(Service.name == self.service))
        return done, found is not None


Secrets = Annotated[_Secrets, Depends()]


@router.get("/services/{service}/secrets", response_model=list[schemas.SecretListed])
def list_secrets(secrets: Secrets) -> list[dict[str, Any]]:
    """Names, scopes and times; never a value."""
    secrets.allowed(write=False)
    return vault.list_secrets(secrets.store, secrets.service, secrets.environment)


@router.put("/services/{service}/secrets", response_model=schemas.SecretsSet)
def set_secrets(body: SecretsIn, secrets: Secrets) -> dict[str, Any]:
    """Set several secrets at once (an import): all of them, or none."""
    done, registered = secrets.set(body.values)
    return {"secrets": done, "registered": registered}


@router.put("/services/{service}/secrets/{name}", response_model=schemas.SecretStored)
def set_secret(name: str, body: SecretIn, secrets: Secrets) -> dict[str, Any]:
    done, registered = secrets.set({name: body.value})
    return done[0] | {"registered": registered}


@router.delete(
    "/services/{service}/secrets/{name}",
    response_model=schemas.SecretRemoved,
    responses=errors(404),
)
def remove_secret(name: str, secrets: Secrets) -> dict[str, Any]:
    secrets.allowed(write=True)
    vault.remove_secret(secrets.store, secrets.service, name, secrets.environment, secrets.by)
    where = {"service": secrets.service, "environment": secrets.environment}
    return where | {"name": name, "removed": True}
