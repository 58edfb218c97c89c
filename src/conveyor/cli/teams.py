"""`conveyor team create|list|delete`: named groups of services, for `conveyor dora --team`.

Embedded against the local store, or through a server when CONVEYOR_URL is set (creating and
deleting take an admin token there; listing, a read one).
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
    members = [s for value in services for s in value.split(",")]
    client = Client()
    if client.http:
        created = client.post("/teams", {"name": name, "services": members})
    else:
        from conveyor.metrics.teams import create_team

        assert client.store is not None
        created = create_team(client.store, name, members, client.actor)
    click.echo(f"team {created['name']}: {', '.join(created['services'])}")


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
