"""The connectors over the API (admin scope): list them with their last sync, sync one now,
and set the token one reads (a secret only that connector reads back; it never comes out).
The connectors themselves are the server's: its connectors file, synced when due."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from conveyor.connectors.sync import listing, set_token, sync_named
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.intake import ConnectorListed, ConnectorSecretSet, ConnectorSynced
from conveyor.server.tokens import Identity
from conveyor.store.vault import MAX_VALUE_CHARS

router = APIRouter(tags=["connectors"], responses=ERRORS)
Admin = Annotated[Identity, Depends(require("admin"))]


class TokenIn(BaseModel):
    value: str = Field(min_length=1, max_length=MAX_VALUE_CHARS)


def _state(request: Request) -> Any:
    return request.app.state.conveyor


@router.get("/connectors", response_model=list[ConnectorListed])
def list_connectors(request: Request, identity: Admin) -> list[dict[str, Any]]:
    """The connectors of the server's connectors file and how their last sync went."""
    state = _state(request)
    return listing(state.store, state.settings.connectors_file)


@router.post("/connectors/{name}/sync", response_model=ConnectorSynced, responses=errors(404))
async def sync_connector(request: Request, name: str, identity: Admin) -> Any:
    """Sync one connector now; a failed pull answers 400 with its error, storing nothing."""
    scoping.unlimited(identity, "syncing a connector")
    state = _state(request)
    done = await run_in_threadpool(sync_named, state.store, name, state.settings.connectors_file)
    return done.as_dict()


@router.put(
    "/connectors/{name}/secrets/{secret}",
    response_model=ConnectorSecretSet,
    responses=errors(404),
)
def set_connector_secret(
    request: Request, name: str, secret: str, body: TokenIn, identity: Admin
) -> dict[str, Any]:
    """Set the token connector ``name`` reads as ``secret`` (its ``token_secret``)."""
    scoping.unlimited(identity, "setting a connector's token")
    state = _state(request)
    done = set_token(
        state.store,
        name,
        secret,
        body.value,
        scoping.who(identity),
        state.settings.connectors_file,
    )
    return {"connector": name, "name": secret, "created": done["created"]}
