"""`conveyor team create|list|add|remove|rename|delete`: named groups of services, for
`conveyor dora --team`.

Embedded against the local store, or through a server when CONVEYOR_URL is set (creating,
changing and deleting take an admin token there; listing, a read one).
"""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli.common import print_listing, when
from conveyor.cli.delivery import Client


@click.group()
def team() -> None:
    """Teams: named groups of services, measured together (`conveyor dora --team NAME`)."""


@team.command("create")
@click.argument("name")
@click.option(
    "--service",
    "services",
    multiple=True,
    required=True,
    help="A service of the team (repeatable, or comma-separated).",
)
def team_create(name: str, services: tuple[str, ...]) -> None:
    """Create team NAME of these services (each must be known)."""
    members = _split(services)
    client = Client()
    if client.http:
        created = client.post("/teams", {"name": name, "services": members})
    else:
        from conveyor.metrics.teams import create_team

        assert client.store is not None
        created = create_team(client.store, name, members, client.actor)
    _show(created)


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated values, each possibly comma-separated: ("a,b", "c") is a, b and c."""
    return [s for value in values for s in value.split(",")]


def _show(team: dict[str, Any]) -> None:
    click.echo(f"team {team['name']}: {', '.join(team['services'])}")


def _change(name: str, change: dict[str, Any]) -> dict[str, Any]:
    """PATCH /teams/{name} through a server, or the same change on the local store."""
    client = Client()
    if client.http:
        changed: dict[str, Any] = client.http._call("PATCH", f"/teams/{name}", json=change)
        return changed
    from conveyor.metrics.teams import change_team

    assert client.store is not None
    return change_team(
        client.store,
        name,
        new_name=change.get("name"),
        add=change.get("add", ()),
        remove=change.get("remove", ()),
        by=client.actor,
    )


@team.command("add")
@click.argument("name")
@click.argument("services", nargs=-1, required=True)
def team_add(name: str, services: tuple[str, ...]) -> None:
    """Add SERVICES to team NAME (each must be known)."""
    _show(_change(name, {"add": _split(services)}))


@team.command("remove")
@click.argument("name")
@click.argument("services", nargs=-1, required=True)
def team_remove(name: str, services: tuple[str, ...]) -> None:
    """Remove SERVICES from team NAME (it keeps at least one)."""
    _show(_change(name, {"remove": _split(services)}))


@team.command("rename")
@click.argument("name")
@click.argument("new_name")
def team_rename(name: str, new_name: str) -> None:
    """Rename team NAME to NEW_NAME (a name no other team has)."""
    _show(_change(name, {"name": new_name}))


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def team_list(as_json: bool) -> None:
    """List the teams and their services."""
    client = Client()
    found: list[dict[str, Any]]
    if client.http:
        found = client.get("/teams")
    else:
        from conveyor.metrics.teams import list_teams

        assert client.store is not None
        found = list_teams(client.store)
    print_listing(
        found,
        as_json,
        ["team", "services", "created", "by"],
        lambda t: [
            t["name"],
            ", ".join(t["services"]),
            when(t["created_at"]),
            t["created_by"] or "-",
        ],
        empty="no teams yet: `conveyor team create NAME --service A --service B`",
    )


@team.command("delete")
@click.argument("name")
def team_delete(name: str) -> None:
    """Delete team NAME (its services and their history stay)."""
    client = Client()
    if client.http:
        client.http._call("DELETE", f"/teams/{name}")
    else:
        from conveyor.metrics.teams import delete_team

        assert client.store is not None
        delete_team(client.store, name, client.actor)
    click.echo(f"team {name} deleted")
