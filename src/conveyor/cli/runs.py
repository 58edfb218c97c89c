"""`conveyor runs`, `show`, `logs`, `cancel`: looking at runs and stopping them."""

from __future__ import annotations

import time
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.cli.common import (
    STATUS_MARK,
    duration,
    print_json,
    print_table,
    store_for,
    when,
)
from conveyor.engine.runs import request_cancel
from conveyor.engine.states import RunStatus
from conveyor.errors import NotFound
from conveyor.store.models import Artifact, Job, LogLine, Run, Service

FOLLOW_POLL_SECONDS = 0.2
# Run ids are 64-bit in the store; a larger number cannot name a run (and must not reach the
# database driver, which cannot even bind it).
MAX_RUN_ID = 2**63 - 1


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "service": run.service.name,
        "status": run.status,
        "reason": run.reason,
        "sha": run.sha,
        "ref": run.ref,
        "trigger": run.trigger,
        "subject": run.commit.get("subject"),
        "author": run.commit.get("author_name"),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": (
            (run.finished_at - run.started_at).total_seconds()
            if run.started_at and run.finished_at
            else None
        ),
    }


@click.command()
@click.option("--service", help="Only runs of this service.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only this status.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(service: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    store = store_for()
    with store.session() as session:
        query = select(Run).order_by(Run.id.desc()).limit(limit)
        if service:
            query = query.join(Service).where(Service.name == service)
        if status:
            query = query.where(Run.status == status)
        found = [_run_dict(r) for r in session.scalars(query)]
    if as_json:
        print_json(found)
        return
    if not found:
        if service or status:
            click.echo("no runs match: `conveyor runs` without filters lists them all")
        else:
            click.echo("no runs yet: `conveyor run` runs the pipeline for HEAD")
        return
    print_table(
        ["run", "service", "status", "commit", "branch", "trigger", "started", "took"],
        [
            [
                str(r["id"]),
                r["service"],
                f"{STATUS_MARK.get(r['status'], '?')} {r['status']}",
                f"{r['sha'][:12]} {_clip(r['subject'] or '', 40)}",
                (r["ref"] or "-").removeprefix("refs/heads/"),
                r["trigger"],
                when(r["started_at"] or r["created_at"]),
                duration(r["started_at"], r["finished_at"]) if r["started_at"] else "-",
            ]
            for r in found
        ],
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _load_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id) if 0 < run_id <= MAX_RUN_ID else None
    if run is None:
        raise NotFound(f"there is no run {run_id}", hint="`conveyor runs` lists the runs")
    return run


def _show_dict(session: Session, run: Run) -> dict[str, Any]:
    data = _run_dict(run)
    data["commit"] = run.commit
    data["jobs"] = [
        {
            "name": job.name,
            "status": job.status,
            "reason": job.reason,
            "needs": job.needs,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "steps": [
                {
                    "name": s.name,
                    "status": s.status,
                    "exit_code": s.exit_code,
                    "attempts": s.attempts,
                    "reason": s.reason,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                }
                for s in job.steps
            ],
        }
        for job in run.jobs
    ]
    names = {job.id: job.name for job in run.jobs}
    data["artifacts"] = [
        {"job": names[a.job_id], "path": a.path, "digest": a.digest, "size": a.size}
        for a in session.scalars(
            select(Artifact).where(Artifact.run_id == run.id).order_by(Artifact.id)
        )
    ]
    return data


@click.command()
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: int, as_json: bool) -> None:
    """Show a run: its commit, jobs, steps and artifacts."""
    store = store_for()
    with store.session() as session:
        data = _show_dict(session, _load_run(session, run_id))
    if as_json:
        print_json(data)
        return
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
        click.echo(
            f"{STATUS_MARK.get(job['status'], '?')} {job['name']}{needs} {job['status']} "
            f"{took}{reason}".rstrip()
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
@click.argument("run_id", type=int)
@click.argument("job", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
def logs(run_id: int, job: str | None, follow: bool, timestamps: bool) -> None:
    """Print the logs of a run (all jobs, or one)."""
    store = store_for()
    with store.session() as session:
        run = _load_run(session, run_id)
        jobs = {j.id: j.name for j in run.jobs}
        if job is not None:
            wanted = [jid for jid, name in jobs.items() if name == job]
            if not wanted:
                raise NotFound(
                    f"run {run_id} has no job '{job}'",
                    hint=f"its jobs: {', '.join(jobs.values())}",
                )
            job_ids = wanted
        else:
            job_ids = list(jobs)
    prefix = job is None and len(jobs) > 1
    width = max((len(n) for n in jobs.values()), default=0)
    last_id = 0
    while True:
        with store.session() as session:
            # Status first: lines written before the run ended are then sure to be read below.
            status = RunStatus(session.get_one(Run, run_id).status) if follow else None
            rows = session.execute(
                select(LogLine.id, LogLine.job_id, LogLine.ts, LogLine.text)
                .where(LogLine.job_id.in_(job_ids), LogLine.id > last_id)
                .order_by(LogLine.id)
                .limit(5000)
            ).all()
        for line_id, job_id, ts, text in rows:
            head = f"{jobs[job_id].ljust(width)} | " if prefix else ""
            stamp = f"{ts.isoformat(timespec='milliseconds')} " if timestamps else ""
            click.echo(f"{stamp}{head}{text}")
            last_id = line_id
        if len(rows) == 5000:
            continue
        if not follow or (status is not None and status.terminal):
            return
        time.sleep(FOLLOW_POLL_SECONDS)


@click.command()
@click.argument("run_id", type=int)
def cancel(run_id: int) -> None:
    """Cancel a queued or running run: its jobs' processes are stopped."""
    store = store_for()
    with store.session() as session:
        _load_run(session, run_id)  # the same message as show/logs for a run that is not there
    status = request_cancel(store, run_id, by="cli")
    click.echo(f"cancel requested for run {run_id} (it was {status.value})")
    with store.session() as session:
        names = session.scalars(select(Job.name).where(Job.run_id == run_id)).all()
    click.echo(f"`conveyor show {run_id}` shows when its {len(names)} jobs have stopped")
