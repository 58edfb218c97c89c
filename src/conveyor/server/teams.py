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
from sqlalchemy import delete, select

from conveyor.engine.credentials import check_names
from conveyor.errors import ConveyorError
from conveyor.events import EventType
from conveyor.metrics.teams import _describe, _services_of, _team, known_services
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.delivery import _actor
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.teams import TeamOut
from conveyor.server.tokens import Identity
from conveyor.store.db import Store
from conveyor.store.models import Team, TeamService

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
def change_team(request: Request, name: str, body: TeamChange, identity: Admin) -> dict[str, Any]:
    """Rename team ``name`` and/or add and remove services; answers the team as it is now.
    Its DORA side by side (GET /dora/portfolio?team=) follows at once."""
    scoping.unlimited(identity, "managing teams")
    store: Store = request.app.state.conveyor.store
    return apply_change(store, name, body, _actor(identity))


def apply_change(store: Store, name: str, change: TeamChange, by: str | None) -> dict[str, Any]:
    """Apply ``change`` to team ``name`` (NotFound if there is none) or refuse it whole."""
    new_name = _new_name(change.name)
    added = check_names("service", change.add)
    removed = check_names("service", change.remove)
    if new_name is None and not added and not removed:
        raise ConveyorError(
            "nothing to change", hint='give a new "name", services to "add" or to "remove"'
        )
    both = sorted(set(added) & set(removed))
    if both:
        raise ConveyorError(f"{', '.join(both)} cannot be both added and removed")
    with store.write() as w:
        session = w.session
        team = _team(session, name)
        members = _services_of(session, team)
        _check_members(team.name, members, added, removed, known_services(session))
        if new_name is not None and new_name != team.name:
            taken = session.scalar(select(Team.id).where(Team.name == new_name))
            if taken is not None:
                raise ConveyorError(
                    f"there is already a team named {new_name!r}",
                    hint="choose another name, or delete that team first",
                )
            team.name = new_name
        if removed:
            session.execute(
                delete(TeamService).where(
                    TeamService.team_id == team.id, TeamService.service.in_(removed)
                )
            )
        session.add_all(TeamService(team_id=team.id, service=s) for s in added)
        now = sorted((set(members) - set(removed)) | set(added))
        renamed: dict[str, Any] = {"renamed_from": name} if team.name != name else {}
        w.emit(EventType.TEAM_SAVED, team=team.name, services=now, actor=by, **renamed)
        return _describe(team, now)


def _new_name(value: str | None) -> str | None:
    if value is None:
        return None
    named = check_names("team", [value])
    if not named:
        raise ConveyorError("a team needs a name")
    return named[0]


def _check_members(
    team: str, members: list[str], added: list[str], removed: list[str], known: set[str]
) -> None:
    unknown = sorted(set(added) - known)
    if unknown:
        raise ConveyorError(
            f"unknown service{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
            hint="`conveyor service list` shows the registered services; imported history "
            "names the others",
        )
    already = sorted(set(added) & set(members))
    if already:
        raise ConveyorError(f"team {team!r} already has {', '.join(already)}")
    strangers = sorted(set(removed) - set(members))
    if strangers:
        raise ConveyorError(f"team {team!r} has no service {', '.join(strangers)}")
    if not (set(members) - set(removed)) | set(added):
        raise ConveyorError(
            f"team {team!r} needs at least one service",
            hint=f"delete the team instead: `conveyor team delete {team}`",
        )
