"""`conveyor incident open|resolve|list|show`: incidents a person reports and resolves.

Embedded against the local store, or through a server when CONVEYOR_URL is set (same answers
either way). Alerts from Alertmanager and failed production checks open incidents on their own;
these commands are for what no alert saw, and for closing what a person fixed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import click

from conveyor.cli.common import print_detail, print_json, print_listing, print_table, when
from conveyor.cli.delivery import Client, _service, incident_list


def parse_time(text: str) -> dt.datetime:
    """``2024-05-01T10:00:00Z`` (no offset: this machine's time zone), ``now``, or a duration
    ago such as ``15m ago``: when an incident began or ended, as people say it."""
    value = text.strip()
    if value.lower() == "now":
        return dt.datetime.now(dt.UTC)
    if value.lower().endswith(" ago"):
        # The pipeline spec's durations, imported only here: the spec package is a large import
        # that listing incidents has no use for.
        from conveyor.spec.durations import DurationError, parse_duration

        try:
            seconds = parse_duration(value[:-4].strip())
        except DurationError as exc:
            raise click.BadParameter(str(exc)) from None
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use e.g. 2024-05-01T10:00:00Z, 'now' or '15m ago'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # this machine's local time, as `when` prints times
    return parsed.astimezone(dt.UTC)


class _Time(click.ParamType[dt.datetime, Any]):
    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        return value if isinstance(value, dt.datetime) else parse_time(str(value))


TIME = _Time()


def _as_time(value: Any) -> dt.datetime | None:
    """Times from the API arrive as text for keys the HTTP client does not convert."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if isinstance(value, dt.datetime) else None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{value:.1f}s"


def _detail(client: Client, incident_id: int) -> dict[str, Any]:
    if client.http:
        found: dict[str, Any] = client.get(f"/incidents/{incident_id}")
        return found
    from conveyor.engine.incidents import incident_detail

    assert client.store is not None
    return incident_detail(client.store, incident_id)


def _attributed(data: Mapping[str, Any]) -> str:
    attribution = data.get("attribution") or {}
    how = attribution.get("how", "none")
    if data.get("deployment"):
        target = f"deployment {data['deployment']}" + (
            f" ({data['version']})" if data.get("version") else ""
        )
    elif data.get("release"):
        target = f"release {data['release']}"
    else:
        return "unattributed" + (f" ({attribution['detail']})" if attribution.get("detail") else "")
    return f"attributed to {target}, {how}"


def _restored_by(data: Mapping[str, Any]) -> str:
    """``by rollback deployment 13``, or ``when it was resolved`` (no rollback came first)."""
    by = data.get("restored_by")
    return "when it was resolved" if by in (None, "resolved") else f"by {by}"


def _print(data: Mapping[str, Any]) -> None:
    click.echo(
        f"incident {data['id']} · {data['service']} {data['environment'] or '-'} · "
        f"{data['status']} · {data['source']}"
    )
    click.echo(f"  title:       {data['title']}")
    click.echo(f"  opened:      {when(_as_time(data['opened_at']))}")
    if data["resolved_at"]:
        click.echo(f"  resolved:    {when(_as_time(data['resolved_at']))} ({data['resolved_by']})")
    click.echo(f"  attribution: {_attributed(data)}")
    detail = (data.get("attribution") or {}).get("detail")
    if detail and (data.get("deployment") or data.get("release")):
        click.echo(f"               {detail}")
    if data.get("restored_at"):
        click.echo(
            f"  restored:    {when(_as_time(data['restored_at']))} {_restored_by(data)}, "
            f"{_seconds(data['recovery_seconds'])} after it began"
        )


@click.group()
def incident() -> None:
    """Incidents: open one by hand, resolve it, list or show them."""


@incident.command("open")
@click.option("--service", help="Service (default: ./conveyor.yml's, or the only one).")
@click.option("--env", "environment", help="Environment (default: the production-tier one).")
@click.option("--title", required=True, help="What is wrong, in a line.")
@click.option("--deployment", type=click.IntRange(min=1), help="The deployment that caused it.")
@click.option("--release", type=click.IntRange(min=1), help="The release that caused it.")
@click.option("--commit", help="The commit that caused it.")
@click.option("--at", type=TIME, help="When it began: a time, 'now' or e.g. '15m ago'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def open_(
    service: str | None,
    environment: str | None,
    title: str,
    deployment: int | None,
    release: int | None,
    commit: str | None,
    at: dt.datetime | None,
    as_json: bool,
) -> None:
    """Open an incident. Without --deployment, --release or --commit it is attributed to the
    production deployment live when it began (within the attribution window), if any."""
    if sum(x is not None for x in (deployment, release, commit)) > 1:
        raise click.UsageError("give at most one of --deployment, --release and --commit")
    client = Client()
    name = _service(client, service)
    if client.http:
        body = {
            "service": name,
            "title": title,
            "environment": environment,
            "deployment": deployment,
            "release": release,
            "commit": commit,
            "at": at.isoformat() if at else None,
        }
        data: dict[str, Any] = client.post("/incidents", body)
    else:
        from conveyor.cli.common import settings
        from conveyor.engine.attribution import attribution_window
        from conveyor.engine.incidents import open_reported

        assert client.store is not None
        incident_id = open_reported(
            client.store,
            service=name,
            title=title,
            actor=client.actor,
            environment=environment,
            deployment=deployment,
            release=release,
            commit=commit,
            at=at,
            window=attribution_window(settings().attribution_hours),
        )
        data = _detail(client, incident_id)
    if as_json:
        print_json(data)
        return
    click.echo(
        f"incident {data['id']} opened ({data['service']} {data['environment'] or '-'}), "
        f"{_attributed(data)}"
    )


@incident.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--at", type=TIME, help="When service was restored (default: now).")
@click.option("--reason", help="What fixed it (kept on the incident).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def resolve(incident_id: int, at: dt.datetime | None, reason: str | None, as_json: bool) -> None:
    """Resolve an open incident."""
    client = Client()
    if client.http:
        body = {"at": at.isoformat() if at else None, "reason": reason}
        data: dict[str, Any] = client.post(f"/incidents/{incident_id}/resolve", body)
    else:
        from conveyor.engine.incidents import resolve_reported

        assert client.store is not None
        resolve_reported(client.store, incident_id, actor=client.actor, at=at, reason=reason)
        data = _detail(client, incident_id)
    if as_json:
        print_json(data)
        return
    click.echo(
        f"incident {incident_id} resolved; service was restored "
        f"{_seconds(data['recovery_seconds'])} after it began, {_restored_by(data)}"
    )


@incident.command("list")
@click.option("--service", help="Only this service.")
@click.option("--open", "open_only", is_flag=True, help="Only open incidents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(service: str | None, open_only: bool, as_json: bool) -> None:
    """Incidents, newest first."""
    headers = ["id", "service", "environment", "status", "source", "opened", "resolved"]
    print_listing(
        incident_list(Client(), service, open_only),
        as_json,
        [*headers, "deployment", "title"],
        lambda i: [
            str(i["id"]),
            i["service"],
            i["environment"] or "-",
            i["status"],
            i["source"],
            when(_as_time(i["opened_at"])),
            when(_as_time(i["resolved_at"])),
            str(i["deployment"] or "-"),
            i["title"][:80],
        ],
        empty="no open incidents" if open_only else "no incidents",
    )


@incident.command("show")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(incident_id: int, as_json: bool) -> None:
    """One incident: its attribution (and why), recovery, and the alert behind it."""
    print_detail(_detail(Client(), incident_id), as_json, _print)


@incident.command("ignored")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ignored(as_json: bool) -> None:
    """Alerts that opened no incident (no service label, unknown service or environment),
    with the reason: what to check when an alert fired and nothing appeared."""
    client = Client()
    if client.http:
        found = client.get("/alerts/ignored")
    else:
        from conveyor.engine.alerts import ignored_alerts

        assert client.store is not None
        found = list(ignored_alerts(client.store))
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no ignored alerts")
        return
    print_table(
        ["received", "alert", "status", "service", "reason"],
        [
            [
                when(_as_time(a["received_at"])),
                a["alert"] or "-",
                a["status"] or "-",
                a["service"] or "-",
                a["reason"] or "",
            ]
            for a in found
        ],
    )
