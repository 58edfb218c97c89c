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
    team_name = _team_name(name)
    members = check_names("service", services)
    if not members:
        raise ConveyorError(
            f"team {team_name!r} needs at least one service", hint="give --service NAME"
        )
    with store.write() as w:
        session = w.session
        _refuse_unknown(members, known_services(session))
        _refuse_taken(
            session, team_name, hint=f"`conveyor team delete {team_name}` first, to define it again"
        )
        team = Team(name=team_name, created_at=utcnow(), created_by=by)
        session.add(team)
        session.flush()
        session.add_all(TeamService(team_id=team.id, service=s) for s in members)
        w.emit(EventType.TEAM_SAVED, team=team_name, services=members, actor=by)
        return _describe(team, members)


def change_team(
    store: Store,
    name: str,
    *,
    new_name: str | None = None,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    by: str | None,
) -> dict[str, Any]:
    """Rename team ``name`` and/or add and remove services in one transaction (NotFound if
    there is none), or refuse the change whole: a name in use, an unknown service, a service
    added twice or removed when it is not a member, a team left without services."""
    renamed_to = None if new_name is None else _team_name(new_name)
    added = check_names("service", add)
    removed = check_names("service", remove)
    if renamed_to is None and not added and not removed:
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
        _refuse_unknown(added, known_services(session))
        _check_members(team.name, members, added, removed)
        if renamed_to is not None and renamed_to != team.name:
            _refuse_taken(
                session, renamed_to, hint="choose another name, or delete that team first"
            )
            team.name = renamed_to
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


def _team_name(value: str) -> str:
    named = check_names("team", [value])
    if not named:
        raise ConveyorError("a team needs a name")
    return named[0]


def _refuse_unknown(services: list[str], known: set[str]) -> None:
    unknown = sorted(set(services) - known)
    if unknown:
        raise ConveyorError(
            f"unknown service{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
            hint="`conveyor service list` shows the registered services; imported history "
            "names the others",
        )


def _refuse_taken(session: Session, name: str, *, hint: str) -> None:
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise ConveyorError(f"there is already a team named {name!r}", hint=hint)


def _check_members(team: str, members: list[str], added: list[str], removed: list[str]) -> None:
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
