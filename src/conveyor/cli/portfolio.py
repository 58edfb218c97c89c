"""`conveyor dora --by-service` and `conveyor dora --team NAME`: the five DORA figures of each
service side by side, one row per service, with the aggregate (all services, or the team's) as
the last row. Embedded it reads the local store; with CONVEYOR_URL it asks the server
(GET /api/v1/dora/portfolio) for the same JSON, and prints that."""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli.common import plural, print_json, print_table
from conveyor.cli.dora import show

FIVE = (
    "deployment_frequency",
    "lead_time",
    "change_failure_rate",
    "recovery_time",
    "rework_rate",
)
HEADERS = ["service", "deploys", "lead time", "CFR", "recovery", "rework", "tier"]
# Options of one report that a portfolio does not take.
NOT_HERE = {"service": "--service", "explain": "--explain"}


def show_portfolio(
    params: dict[str, Any], team: str | None, *, as_json: bool, as_csv: bool
) -> None:
    for key, option in NOT_HERE.items():
        if params.get(key):
            raise click.UsageError(
                f"{option} is for one report; --by-service and --team show several side by side"
            )
    if as_csv:
        raise click.UsageError("--csv prints one report's series; use --json for a portfolio")
    data = fetch_portfolio(params, team)
    if as_json:
        print_json(data)
    else:
        render_portfolio(data)


def fetch_portfolio(params: dict[str, Any], team: str | None) -> dict[str, Any]:
    """The portfolio as JSON: from the server when CONVEYOR_URL is set, else computed here."""
    from conveyor.cli.backend import HttpBackend, backend

    chosen = backend()
    query = {k: v for k, v in params.items() if k not in NOT_HERE and v not in (None, False)}
    if team:
        query["team"] = team
    if isinstance(chosen, HttpBackend):
        found: dict[str, Any] = chosen._call("GET", "/dora/portfolio", params=query)
        return found
    from conveyor.metrics.dora import from_params
    from conveyor.metrics.portfolio import portfolio

    window, settings = from_params(query)
    return portfolio(chosen.store, window, settings, team)  # type: ignore[attr-defined]


def row_of(name: str, entry: dict[str, Any]) -> list[str]:
    metrics = entry["metrics"]
    return [name, *(show(key, metrics[key]["value"]) for key in FIVE), entry["tier"] or "-"]


def render_portfolio(data: dict[str, Any]) -> None:
    w, scope, tiers = data["window"], data["scope"], data["tiers"]
    count = len(scope["services"])
    who = f"team {data['team']}" if data["team"] else "all services"
    size = plural(count, "service") if data["team"] else str(count)
    click.echo(
        f"DORA side by side · {who} ({size}) · {scope['env_tier']} · {w['from']} → {w['to']} "
        f"({plural(w['days'], 'day')}, {w['time_zone']})"
    )
    click.echo(f"tiers: {tiers['title']} ({tiers['url']}); a row's tier is its lowest figure's")
    click.echo("")
    rows = [row_of(entry["service"], entry) for entry in data["services"]]
    rows.append(row_of(f"= {who}", data["aggregate"]))
    print_table(HEADERS, rows)
