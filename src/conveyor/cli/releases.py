"""`conveyor releases` and `conveyor release ID`: what successful runs yielded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from conveyor.cli.backend import backend
from conveyor.cli.common import STATUS_MARK, print_detail, print_listing, when


@click.command()
@click.option("--service", help="Only releases of this service.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def releases(service: str | None, limit: int, as_json: bool) -> None:
    """List releases, newest first: each is a successful run's commit and artifacts."""
    print_listing(
        backend().list_releases(service, limit),
        as_json,
        ["release", "service", "commit", "branch", "run", "created"],
        lambda r: [
            str(r["id"]),
            r["service"],
            f"{r['sha'][:12]} {r['subject'] or ''}".strip(),
            (r["ref"] or "-").removeprefix("refs/heads/"),
            str(r["run"]),
            when(r["created_at"]),
        ],
        empty="no releases yet: a run that succeeds makes one",
    )


@click.command()
@click.argument("release_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def release(release_id: int, as_json: bool) -> None:
    """Show a release: commit, evidence (every job's outcome), artifacts by digest, and its
    timeline: the commit, its run, its deployments, approvals, rollbacks and incidents, in the
    order they happened."""
    source = backend()
    data = source.release_detail(release_id)
    print_detail(data, as_json, _print_release)
    if not as_json:
        _print_timeline(source.release_timeline(release_id)["entries"])


def _print_release(data: Mapping[str, Any]) -> None:
    click.echo(f"release {data['id']} · {data['service']} · from run {data['run']}")
    click.echo(f"  commit:  {data['sha']} {data['subject'] or ''}".rstrip())
    click.echo(f"  author:  {data['author'] or '-'}")
    click.echo(f"  branch:  {(data['ref'] or '-').removeprefix('refs/heads/')}")
    click.echo(f"  created: {when(data['created_at'])}")
    click.echo("  evidence:")
    for job, status in data["evidence"].get("jobs", {}).items():
        click.echo(f"    {STATUS_MARK.get(status, '?')} {job} {status}")
    if data["artifacts"]:
        click.echo("  artifacts:")
        for a in data["artifacts"]:
            click.echo(f"    {a['path']}  {a['digest']}  {a['size']} bytes")
    publication = data.get("publication") or {}
    if publication.get("status") not in (None, "none"):
        click.echo(f"  published: {publication['status']}")
        if publication.get("pinned"):
            click.echo(f"    {publication['pinned']}")
        for image in publication.get("images") or []:
            click.echo(f"    image {image}")
        if publication.get("error"):
            click.echo(f"    {publication['error']}")
    if data.get("deployments"):
        click.echo("  deployments:")
        for d in data["deployments"]:
            click.echo(
                f"    #{d['id']} {d['environment']} {d['kind']} {d['status']}"
                + (f" — {d['reason']}" if d["reason"] else "")
            )


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f" in {seconds:.1f}s"


def timeline_event(entry: Mapping[str, Any]) -> str:
    """One line of the timeline: what happened, by whom, how it ended."""
    kind = entry["kind"]
    if kind == "commit":
        by = f" by {entry['author']}" if entry.get("author") else ""
        return f"committed {entry['sha'][:12]} {entry.get('subject') or ''}".rstrip() + by
    if kind == "run":
        jobs = ", ".join(
            f"{STATUS_MARK.get(j['status'], '?')} {j['name']}" for j in entry.get("jobs", [])
        )
        return f"run {entry['run']} {entry['status']}{_duration(entry.get('duration'))}" + (
            f" ({jobs})" if jobs else ""
        )
    if kind == "release":
        count = len(entry.get("artifacts") or [])
        published = (entry.get("publication") or {}).get("status", "none")
        return f"released {entry['version']} with {count} artifact(s)" + (
            f", publication {published}" if published != "none" else ""
        )
    if kind in ("deployment", "rollback"):
        checks = ", ".join(
            f"{c['kind']} {c['outcome']}" for c in entry.get("checks", []) if c.get("kind")
        )
        line = (
            f"{kind} {entry['deployment']} of {entry['version']} to {entry['environment']}: "
            f"{entry['status']}{_duration(entry.get('duration'))}"
        )
        if checks:
            line += f" (checks: {checks})"
        if kind == "rollback" and entry.get("why"):
            line += f"; {entry['why']}"
        elif entry.get("reason"):
            line += f" — {entry['reason']}"
        return line
    if kind == "approval":
        who = ", ".join(f"{d['user']} ({d['decision']})" for d in entry.get("decisions", []))
        return (
            f"approval {entry['approval']} for {entry['environment']}: {entry['status']} "
            f"({entry['approved']}/{entry['required']})" + (f" by {who}" if who else "")
        )
    if kind == "incident":
        return f"incident {entry['incident']} {entry['status']}: {entry['title']}"
    return str(kind)


def _print_timeline(entries: list[dict[str, Any]]) -> None:
    if not entries:
        return
    click.echo("  timeline:")
    for entry in entries:
        click.echo(f"    {when(entry['at'])}  {timeline_event(entry)}")
