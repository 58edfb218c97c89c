"""`conveyor dora`: the five DORA metrics and the flow figures, with tiers and trends.

Embedded it reads the local store; with CONVEYOR_URL it asks the server (GET /api/v1/dora) for
the same JSON. The table, the CSV and --explain are all drawn from that JSON, so the output is
the same either way.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import click
from click.decorators import FC

from conveyor.cli.common import interactive, plural, print_json, print_table

ARROW = {"up": "↑", "down": "↓", "flat": "→"}
ORDER = (
    "deployment_frequency",
    "lead_time",
    "change_failure_rate",
    "recovery_time",
    "rework_rate",
    "batch_size",
    "caught_before_traffic",
    "incident_recovery",
    "work_in_progress",
)


def shown(
    name: str, default: str, help: str, choices: Sequence[str] | None = None
) -> Callable[[FC], FC]:
    """An option whose default --help shows; ``choices``: the only values it takes."""
    kind = click.Choice(choices) if choices else None
    return click.option(name, default=default, show_default=True, help=help, type=kind)


@click.command()
@click.option("--service", help="Only this service (default: all).")
@shown("--env-tier", "production", "Environment tier.")
@click.option("--since", help="The last N days or weeks, today included (default 90d).")
@click.option("--from", "start", metavar="DATE", help="First day of the window (YYYY-MM-DD).")
@click.option("--to", "end", metavar="DATE", help="First day after the window (excluded).")
@shown("--by", "week", "Buckets of the series.", choices=("day", "week", "month"))
@shown("--tz", "UTC", "IANA time zone of days and weeks.")
@shown("--week-start", "monday", "First day of a week.")
@shown(
    "--lead-time-from",
    "committed",
    "Lead time starts at the committer date, the author date or when Conveyor saw it.",
    choices=("committed", "authored", "seen"),
)
@shown("--tiers", "2023", "DORA tier table: 2023, 2024.")
@shown(
    "--look-back",
    "30d",
    "How old a first deployment's commits may be and still count for lead time.",
)
@shown(
    "--attribution-window",
    "48h",
    "How long after a deployment ended an incident is still blamed on it.",
)
@click.option("--explain", is_flag=True, help="List the deployments, commits and incidents.")
@click.option(
    "--by-service", is_flag=True, help="Every service side by side, with all of them together."
)
@click.option("--team", help="A team's services side by side, with the team's figures.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the series (one row per bucket) as CSV.")
def dora(
    explain: bool,
    by_service: bool,
    team: str | None,
    as_json: bool,
    as_csv: bool,
    **options: Any,
) -> None:
    """Deployment frequency, lead time, change failure rate, recovery time and rework rate,
    with batch size and work in progress; tiers from the DORA reports, trends against the
    previous window of the same length. docs/metrics.md defines each figure."""
    from conveyor.metrics.dora_query import params_of

    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together")
    # --service and the window's options, under the names of GET /api/v1/dora's query.
    params = params_of(options) | {"explain": explain}
    if by_service or team:
        from conveyor.cli.portfolio import show_portfolio

        show_portfolio(params, team, as_json=as_json, as_csv=as_csv)
        return
    data = fetch(params)
    if as_json:
        print_json(data)
    elif as_csv:
        write_csv(data["series"])
    else:
        render(data)
        if explain:
            render_explanation(data)


def fetch(params: dict[str, Any]) -> dict[str, Any]:
    """The report as JSON: from the server when CONVEYOR_URL is set, else computed here."""
    from conveyor.cli.backend import HttpBackend, backend

    chosen = backend()
    if isinstance(chosen, HttpBackend):
        query = {k: v for k, v in params.items() if v not in (None, False)}
        found: dict[str, Any] = chosen._call("GET", "/dora", params=query)
        return found
    from conveyor.metrics.dora import from_params
    from conveyor.metrics.load import report

    window, settings = from_params(params)
    return report(chosen.store, window, settings).to_json()  # type: ignore[attr-defined]


# --- the table --------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    from conveyor.metrics.dora import fmt_duration

    return "-" if seconds is None else fmt_duration(seconds)


def show(metric: str, value: float | None) -> str:
    """A figure's value as a person reads it."""
    if value is None:
        return "-"
    if metric in ("lead_time", "recovery_time", "incident_recovery"):
        return duration(value)
    if metric in ("change_failure_rate", "rework_rate"):
        return f"{value * 100:.1f} %"
    if metric == "deployment_frequency":
        return f"{value:.2f} / week"
    if metric == "batch_size":
        return plural(value, "commit")
    if metric == "caught_before_traffic":
        return plural(value, "deployment")
    return plural(value, "release")


SAMPLE = {
    "deployment_frequency": "deployment",
    "lead_time": "commit",
    "change_failure_rate": "deployment",
    "recovery_time": "failure",
    "rework_rate": "deployment",
    "batch_size": "deployment",
    "caught_before_traffic": "deployment",
    "incident_recovery": "incident",
    "work_in_progress": "release",
}


def trend(metric: str, fig: dict[str, Any]) -> str:
    if fig.get("trend") is None:
        return "-"
    word = {True: " better", False: " worse", None: ""}[fig.get("better")]
    arrow = f"{ARROW[fig['trend']]} from {show(metric, fig['previous'])}{word}"
    if interactive() and fig.get("better") is not None:
        colour = "green" if fig["better"] else "red"
        return f"[{colour}]{arrow}[/{colour}]"
    return arrow


def render(data: dict[str, Any]) -> None:
    w, scope, tiers = data["window"], data["scope"], data["tiers"]
    who = scope["service"] or f"all services ({len(scope['services'])})"
    click.echo(
        f"DORA · {who} · {scope['env_tier']} · {w['from']} → {w['to']} "
        f"({plural(w['days'], 'day')}, {w['time_zone']}, weeks from {w['week_start'].capitalize()})"
    )
    if w.get("note"):
        click.echo(f"window: {w['note']} (give --since or --from to choose)")
    previous = data.get("previous_window")
    against = f"trends against {previous['from']} → {previous['to']} · " if previous else ""
    click.echo(f"{against}tiers: {tiers['title']} ({tiers['url']})")
    click.echo("")
    rows = []
    metrics = data["metrics"]
    for name in ORDER:
        fig = metrics.get(name)
        if fig is None:
            continue
        p90 = show(name, fig.get("p90")) if "p90" in fig else "-"
        rows.append(
            [
                fig["title"],
                show(name, fig["value"]),
                p90,
                plural(fig["sample_size"], SAMPLE[name]),
                fig["tier"] or ("too few" if fig.get("warning") else "-"),
                trend(name, fig),
            ]
        )
        if name == "deployment_frequency":
            extra = f"{fig['deploy_days_per_week']:.2f} / week · band: {fig['band']}"
            rows.append(["  deploy days", extra, "", plural(fig["deploy_days"], "day"), "", ""])
        if name == "work_in_progress" and fig["by_environment"]:
            where = ", ".join(f"{k} {v}" for k, v in fig["by_environment"].items())
            rows.append(["  by environment", where, "", "", "", ""])
    print_table(["metric", "value", "p90", "sample", "tier", "trend"], rows)
    warned = {metrics[name]["warning"] for name in ORDER if metrics.get(name, {}).get("warning")}
    for warning in sorted(warned):
        click.echo(f"no tier: {warning}")
    stages = metrics["lead_time"].get("stages")
    if stages and metrics["lead_time"]["sample_size"]:
        parts = [
            f"{name} {stage['share'] * 100:.0f}% ({duration(stage['mean'])})"
            for name, stage in stages.items()
            if stage["share"]
        ]
        click.echo("")
        click.echo("where lead time goes (share, mean per commit): " + " · ".join(parts))
    click.echo("")
    print_table(
        ["from", "deploys", "deploy days", "lead time", "p90", "CFR", "recovery", "rework"],
        [
            [
                row["start"],
                str(row["deployments"]),
                str(row["deploy_days"]),
                duration(row["lead_time_median"]),
                duration(row["lead_time_p90"]),
                show("change_failure_rate", row["change_failure_rate"]),
                duration(row["recovery_median"]),
                show("rework_rate", row["rework_rate"]),
            ]
            for row in data["series"]
        ],
    )


def render_explanation(data: dict[str, Any]) -> None:
    """What is behind each figure, one line per deployment, commit, incident or release."""
    zone = ZoneInfo(data["window"]["time_zone"])
    for name in ORDER:
        fig = data["metrics"].get(name)
        if fig is None:
            continue
        click.echo("")
        click.echo(f"{fig['title']}: {fig['definition']}")
        found = fig.get("explanation", [])
        if not found:
            click.echo("  (nothing)")
        for item in found:
            value = item["value"]
            # The exact seconds beside the rounded duration: a median can be recomputed.
            shown = (
                f"{duration(value)} ({value:g} s)"
                if value is not None and name != "batch_size"
                else ""
            )
            when = _local(item["time"], zone)
            click.echo(
                f"  {when}  {item['kind']} {item['id']} ({item['service']})"
                + (f"  {shown}" if shown else "")
                + f"  {item['how']}"
                + (f" [deployment {item['deployment']}]" if item.get("deployment") else "")
            )


def _local(value: str | None, zone: ZoneInfo) -> str:
    if value is None:
        return "-"
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def write_csv(series: list[dict[str, Any]]) -> None:
    if not series:
        return
    out = csv.DictWriter(sys.stdout, fieldnames=list(series[0]), lineterminator="\n")
    out.writeheader()
    out.writerows(series)
