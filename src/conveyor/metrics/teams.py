"""Teams: named groups of services whose DORA figures are read together (metrics.portfolio).

A team names services Conveyor knows: registered ones, and those only imported history names
(their deployment facts). A name nobody knows is refused, and nothing is stored: a typo would
otherwise become a member that never has a figure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from conveyor.engine.credentials import check_names
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.store.db import Store
from conveyor.store.models import DeploymentFactRow, Service, Team, TeamService, utcnow

LIST_HINT = "`conveyor team list` shows the teams"


def known_services(session: Session) -> set[str]:
    """Every service Conveyor knows: registered, or named by a deployment fact."""
    registered = set(session.scalars(select(Service.name)))
    return registered | set(session.scalars(select(DeploymentFactRow.service).distinct()))


def create_team(store: Store, name: str, services: Iterable[str], by: str | None) -> dict[str, Any]:
    """Store team ``name`` of ``services`` (each known); refuse a name in use."""
    named = check_names("team", [name])
    if not named:
        raise ConveyorError("a team needs a name")
    team_name = named[0]
    members = check_names("service", services)
    if not members:
        raise ConveyorError(
            f"team {team_name!r} needs at least one service", hint="give --service NAME"
        )
    with store.write() as w:
        session = w.session
        unknown = sorted(set(members) - known_services(session))
        if unknown:
            raise ConveyorError(
                f"unknown service{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
                hint="`conveyor service list` shows the registered services; imported history "
                "names the others",
            )
        if session.scalar(select(Team.id).where(Team.name == team_name)) is not None:
            raise ConveyorError(
                f"there is already a team named {team_name!r}",
                hint=f"`conveyor team delete {team_name}` first, to define it again",
            )
        team = Team(name=team_name, created_at=utcnow(), created_by=by)
        session.add(team)
        session.flush()
        session.add_all(TeamService(team_id=team.id, service=s) for s in members)
        w.emit(EventType.TEAM_SAVED, team=team_name, services=members, actor=by)
        return _describe(team, members)


def list_teams(store: Store) -> list[dict[str, Any]]:
    """Every team with its services, by name."""
    with store.session() as session:
        teams = list(session.scalars(select(Team).order_by(Team.name)))
        members: dict[int, list[str]] = {}
        for team_id, service in session.execute(
            select(TeamService.team_id, TeamService.service).order_by(TeamService.service)
        ):
            members.setdefault(team_id, []).append(service)
        return [_describe(t, members.get(t.id, [])) for t in teams]


def team_services(store: Store, name: str) -> list[str]:
    """The services of team ``name`` (NotFound if there is none)."""
    with store.session() as session:
        return _services_of(session, _team(session, name))


def delete_team(store: Store, name: str, by: str | None) -> dict[str, Any]:
    """Forget team ``name`` (its services and their history stay); the team as it was."""
    with store.write() as w:
        team = _team(w.session, name)
        found = _describe(team, _services_of(w.session, team))
        w.session.execute(delete(TeamService).where(TeamService.team_id == team.id))
        w.session.execute(delete(Team).where(Team.id == team.id))
        w.emit(EventType.TEAM_DELETED, team=name, actor=by)
        return found


def _services_of(session: Session, team: Team) -> list[str]:
    return list(
        session.scalars(
            select(TeamService.service)
            .where(TeamService.team_id == team.id)
            .order_by(TeamService.service)
        )
    )


def _team(session: Session, name: str) -> Team:
    found = session.scalar(select(Team).where(Team.name == name))
    if found is None:
        raise NotFound(f"there is no team named {name!r}", hint=LIST_HINT)
    return found


def _describe(team: Team, services: list[str]) -> dict[str, Any]:
    return {
        "name": team.name,
        "services": services,
        "created_at": team.created_at,
        "created_by": team.created_by,
    }
