"""`conveyor runs`, `show`, `logs`, `cancel`, `rerun`: looking at runs and acting on them,
against the local store or, with CONVEYOR_URL set, a server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from conveyor.cli.backend import backend
from conveyor.cli.common import STATUS_MARK, duration, print_detail, print_listing, when
from conveyor.states import RunStatus

run_id_argument = click.argument("run_id", type=int)


@click.command()
@click.option("--service", help="Only runs of this service.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only this status.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(service: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    print_listing(
        backend().list_runs(service, status, limit),
        as_json,
        ["run", "service", "status", "commit", "branch", "trigger", "started", "took"],
        lambda r: [
            str(r["id"]),
            r["service"],
            f"{STATUS_MARK.get(r['status'], '?')} {r['status']}",
            f"{r['sha'][:12]} {_clip(r['subject'] or '', 40)}",
            (r["ref"] or "-").removeprefix("refs/heads/"),
            r["trigger"],
            when(r["started_at"] or r["created_at"]),
            duration(r["started_at"], r["finished_at"]) if r["started_at"] else "-",
        ],
        empty="no runs match: `conveyor runs` without filters lists them all"
        if service or status
        else "no runs yet: `conveyor run` runs the pipeline for HEAD",
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@run_id_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: int, as_json: bool) -> None:
    """Show a run: its commit, jobs, steps and artifacts."""
    print_detail(backend().run_detail(run_id), as_json, print_run)


def print_run(data: Mapping[str, Any]) -> None:
    mark = STATUS_MARK.get(data["status"], "?")
    click.echo(f"run {data['id']} · {data['service']} · {mark} {data['status']}")
    if data["reason"]:
        click.echo(f"  reason:  {data['reason']}")
    click.echo(f"  commit:  {data['sha']} {data['subject'] or ''}")
    click.echo(f"  author:  {data['author'] or '-'}")
    click.echo(f"  branch:  {(data['ref'] or '-').removeprefix('refs/heads/')}")
    click.echo(f"  trigger: {data['trigger']}")
    click.echo(f"  started: {when(data['started_at'])}")
    took = duration(data["started_at"], data["finished_at"]) if data["started_at"] else "-"
    click.echo(f"  took:    {took}")
    click.echo("")
    for job in data["jobs"]:
        took = duration(job["started_at"], job["finished_at"]) if job["started_at"] else ""
        reason = f" — {job['reason']}" if job["reason"] else ""
        needs = f" (needs {', '.join(job['needs'])})" if job["needs"] else ""
        # A job given to a runner again after its runner was lost: which attempt this is.
        again = f" (attempt {job['attempt']})" if job.get("attempt", 0) > 1 else ""
        click.echo(
            f"{STATUS_MARK.get(job['status'], '?')} {job['name']}{needs} {job['status']} "
            f"{took}{again}{reason}".rstrip()
        )
        for step in job["steps"]:
            took = duration(step["started_at"], step["finished_at"]) if step["started_at"] else ""
            extra = []
            if step["exit_code"] not in (None, 0):
                extra.append(f"exit {step['exit_code']}")
            if step["attempts"] > 1:
                extra.append(f"{step['attempts']} attempts")
            if step["reason"]:
                extra.append(step["reason"])
            tail = f" ({'; '.join(extra)})" if extra else ""
            click.echo(
                f"    {STATUS_MARK.get(step['status'], '?')} {step['name']} {step['status']} "
                f"{took}{tail}".rstrip()
            )
    if data["artifacts"]:
        click.echo("\nartifacts:")
        for a in data["artifacts"]:
            click.echo(f"  {a['job']}: {a['path']}  {a['digest']}  {a['size']} bytes")


@click.command()
@run_id_argument
@click.argument("job", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
def logs(run_id: int, job: str | None, follow: bool, timestamps: bool) -> None:
    """Print the logs of a run (all jobs, or one)."""
    source = backend()
    names = source.job_names(run_id)
    prefix = job is None and len(names) > 1
    width = max((len(n) for n in names), default=0)
    # A job given to a runner again (its first runner was lost) shows each attempt apart.
    retried = {j["name"] for j in source.run_detail(run_id)["jobs"] if j.get("attempt", 0) > 1}
    attempts: dict[str, int] = {}
    for line in source.logs(run_id, job, follow):
        head = f"{line['job'].ljust(width)} | " if prefix else ""
        attempt = int(line.get("attempt") or 0)
        seen = attempts.setdefault(line["job"], 0)
        if attempt > seen and (attempt > 1 or line["job"] in retried):
            click.echo(f"{head}--- attempt {attempt} ---")
        attempts[line["job"]] = max(seen, attempt)
        stamp = f"{line['ts'].isoformat(timespec='milliseconds')} " if timestamps else ""
        click.echo(f"{stamp}{head}{line['text']}")


@click.command()
@run_id_argument
def cancel(run_id: int) -> None:
    """Cancel a queued or running run: its jobs' processes are stopped."""
    was, jobs = backend().cancel(run_id)
    click.echo(f"cancel requested for run {run_id} (it was {was})")
    click.echo(f"`conveyor show {run_id}` shows when its {jobs} jobs have stopped")


@click.command()
@run_id_argument
@click.option("--failed", "failed_only", is_flag=True, help="Only the jobs that did not succeed.")
def rerun(run_id: int, failed_only: bool) -> None:
    """Run a finished run's commit again: every job, or only those that did not succeed
    (the others keep their results and artifacts). Needs a server (CONVEYOR_URL)."""
    data = backend().rerun(run_id, failed_only)
    reused = [j["name"] for j in data["jobs"] if (j["reason"] or "").startswith("reused from")]
    click.echo(f"run {data['id']} queued: a re-run of run {run_id}")
    if reused:
        click.echo(f"  kept from run {run_id}: {', '.join(reused)}")
