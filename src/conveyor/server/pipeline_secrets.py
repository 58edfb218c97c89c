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


def _store(request: Request) -> Store:
    store: Store = request.app.state.conveyor.store
    return store


def _allowed(identity: Identity, service: str, environment: str | None, write: bool) -> None:
    scoping.check(identity, service, environment, action="manage the secrets of")
    if write and environment is None and identity.environments:
        # A service-wide secret reaches every environment, so setting one is not an act on
        # the environments this caller is limited to only.
        raise HTTPException(
            403,
            f"{scoping.who(identity)} is limited to {identity.limits()}: a service-wide "
            "secret reaches every environment; give ?environment=",
        )


def _registered(store: Store, service: str) -> bool:
    with store.session() as session:
        return session.scalar(select(Service.id).where(Service.name == service)) is not None


@router.get("/services/{service}/secrets", response_model=list[schemas.SecretListed])
def list_secrets(
    request: Request, service: str, identity: Admin, environment: Environment = None
) -> list[dict[str, Any]]:
    """Names, scopes and times; never a value."""
    _allowed(identity, service, environment, write=False)
    return vault.list_secrets(_store(request), service, environment)


@router.put("/services/{service}/secrets", response_model=schemas.SecretsSet)
def set_secrets(
    request: Request,
    service: str,
    body: SecretsIn,
    identity: Admin,
    environment: Environment = None,
) -> dict[str, Any]:
    """Set several secrets at once (an import): all of them, or none."""
    _allowed(identity, service, environment, write=True)
    store = _store(request)
    done = vault.import_secrets(store, service, body.values, environment, scoping.who(identity))
    return {"secrets": done, "registered": _registered(store, service)}


@router.put("/services/{service}/secrets/{name}", response_model=schemas.SecretStored)
def set_secret(
    request: Request,
    service: str,
    name: str,
    body: SecretIn,
    identity: Admin,
    environment: Environment = None,
) -> dict[str, Any]:
    _allowed(identity, service, environment, write=True)
    store = _store(request)
    done = vault.set_secret(store, service, name, body.value, environment, scoping.who(identity))
    return done | {"registered": _registered(store, service)}


@router.delete(
    "/services/{service}/secrets/{name}",
    response_model=schemas.SecretRemoved,
    responses=errors(404),
)
def remove_secret(
    request: Request, service: str, name: str, identity: Admin, environment: Environment = None
) -> dict[str, Any]:
    _allowed(identity, service, environment, write=True)
    vault.remove_secret(_store(request), service, name, environment, scoping.who(identity))
    return {"service": service, "environment": environment, "name": name, "removed": True}
