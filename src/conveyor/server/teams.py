"""Changing a team in place: PATCH /teams/{name} renames it and adds or removes services, in one
transaction (admin, for a caller limited to no service, as POST and DELETE /teams in
server/portfolio.py). The web UI's Teams page manages teams through it.

A change is checked whole before anything is stored: a name in use, an unknown service, a
service added twice or removed when it is not a member, or a team left without services is
refused (400) and the team stays as it was.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from conveyor.metrics.teams import change_team
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.delivery import _actor
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.teams import TeamOut
from conveyor.server.tokens import Identity
from conveyor.store.db import Store

router = APIRouter(responses=ERRORS)
Admin = Annotated[Identity, Depends(require("admin"))]


class TeamChange(BaseModel):
    name: str | None = Field(None, max_length=200, description="A new name; absent: unchanged.")
    add: list[str] = Field(
        default_factory=list, max_length=1000, description="Known services to add, by name."
    )
    remove: list[str] = Field(
        default_factory=list, max_length=1000, description="Its services to remove, by name."
    )


@router.patch("/teams/{name}", tags=["teams"], response_model=TeamOut, responses=errors(404))
def patch_team(request: Request, name: str, body: TeamChange, identity: Admin) -> dict[str, Any]:
    """Rename team ``name`` and/or add and remove services; answers the team as it is now.
    Its DORA side by side (GET /dora/portfolio?team=) follows at once."""
    scoping.unlimited(identity, "managing teams")
    store: Store = request.app.state.conveyor.store
    return change_team(
        store, name, new_name=body.name, add=body.add, remove=body.remove, by=_actor(identity)
    )
