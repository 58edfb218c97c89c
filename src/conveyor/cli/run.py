"""`conveyor run`: run the pipeline for one commit, here, with a live view of its jobs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conveyor.cli.common import STATUS_MARK, interactive, settings, store_for
from conveyor.git import find_repo_root
from conveyor.states import JobStatus, RunStatus

if TYPE_CHECKING:
    from conveyor.cli.view import RunView
    from conveyor.runner.local import LocalRunner
    from conveyor.store.db import Store

EXIT_CODES = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.FAILED: 1,
    RunStatus.CANCELLED: 130,
    RunStatus.INTERRUPTED: 130,
}
FAILED_LOG_TAIL = 20
REMOTE_POLL_SECONDS = 0.3


@click.command()
@click.option("--sha", "rev", default="HEAD", show_default=True, help="Commit, branch or tag.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository (default: the one around the current directory).",
)
@click.option("-j", "--parallelism", type=click.IntRange(min=1), help="Jobs at once.")
@click.option("--keep-workspaces", is_flag=True, help="Keep each job's workspace afterwards.")
@click.option(
    "--unsafe-no-sandbox",
    "no_sandbox",
    is_flag=True,
    help="Run the jobs without the bubblewrap sandbox, as you, seeing this machine's files "
    "[env: CONVEYOR_SANDBOX=off].",
)
def run(
    rev: str, repo: Path | None, parallelism: int | None, keep_workspaces: bool, no_sandbox: bool
) -> None:
    """Run the pipeline of conveyor.yml for a commit (default HEAD) and wait for it.

    With CONVEYOR_URL set, the server runs it (the commit must be in the service's
    repository there) and this command follows it."""
    root = find_repo_root(repo or Path.cwd())
    given = settings()
    if given.url:
        raise SystemExit(_run_on_server(root, rev, given.url, given.token))
    # Here the run is driven by this process: the engine, the runner and the store, imported
    # only now (against a server this command needs none of them).
    import asyncio

    from conveyor.cli.view import LiveView, PlainView
    from conveyor.engine.driver import process_owner
    from conveyor.runner.artifacts import ArtifactStore
    from conveyor.runner.executor import RunnerSettings, SourceCache
    from conveyor.runner.local import LocalRunner
    from conveyor.sandbox import configure
    from conveyor.secrets import Secrets
    from conveyor.sources.commits import queue_commit
    from conveyor.store.vault import legacy_file, legacy_warning

    # Before the run is recorded: without a sandbox nothing is queued.
    sandbox = configure(disabled=no_sandbox, settings=given)
    if not sandbox.enabled:
        click.echo(f"warning: sandbox {sandbox.describe()}", err=True)
    store = store_for(root)
    legacy = legacy_file(store.home, given.secrets_file)
    if legacy is not None:
        click.echo(f"warning: {legacy_warning(legacy)}", err=True)
    sources = SourceCache(store.home / "workspaces")
    runner_settings = RunnerSettings(
        workspaces=store.home / "workspaces",
        artifacts=ArtifactStore(store.home / "artifacts"),
        # None here: LocalRunner gives each job the secrets of its service it references.
        secrets=Secrets(),
        sources=sources,
        keep_workspaces=keep_workspaces,
        sandbox=sandbox,
        conveyor=given,
    )
    queued = queue_commit(store, root, rev, owner=process_owner())
    limit = parallelism or queued.pipeline.defaults.parallelism or os.cpu_count() or 2
    view: RunView = LiveView(store) if interactive() else PlainView(store)
    view.begin(queued)
    try:
        status = asyncio.run(
            _drive(
                store,
                queued.run_id,
                LocalRunner(store, runner_settings),
                limit,
                view,
                given.lease_seconds,
            )
        )
    finally:
        sources.clear()
    view.end(queued.run_id)
    _print_failed_tail(store, queued.run_id)
    raise SystemExit(EXIT_CODES[status])


async def _drive(
    store: Store,
    run_id: int,
    runner: LocalRunner,
    parallelism: int,
    view: RunView,
    lease_seconds: float,
) -> RunStatus:
    import asyncio

    from conveyor.engine.driver import RunDriver
    from conveyor.proc import use_fast_child_watcher

    driver = RunDriver(store, run_id, runner.launch, parallelism, lease_seconds)
    loop = asyncio.get_running_loop()
    use_fast_child_watcher(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, driver.request_cancel)
    unsubscribe = store.subscribe(view.event)
    try:
        return await driver.drive()
    finally:
        unsubscribe()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run_on_server(root: Path, rev: str, url: str, token: str | None) -> int:
    from conveyor.cli.backend import HttpBackend
    from conveyor.cli.runs import print_run
    from conveyor.git import resolve_commit
    from conveyor.sources.commits import full_ref, load_pipeline_at

    commit = resolve_commit(root, rev)
    service = load_pipeline_at(root, commit).service
    server = HttpBackend(url, token)
    data = server.trigger(service, commit.sha, full_ref(root, rev))
    run_id = data["id"]
    click.echo(f"run {run_id} · {service} @ {commit.short_sha} · queued on {server.url}")
    seen: dict[str, str] = {}
    while True:
        for job in data["jobs"]:
            if seen.get(job["name"]) != job["status"]:
                seen[job["name"]] = job["status"]
                why = f": {job['reason']}" if job["reason"] else ""
                click.echo(
                    f"  {STATUS_MARK.get(job['status'], '?')} {job['name']} {job['status']}{why}"
                )
        if RunStatus(data["status"]).terminal:
            break
        time.sleep(REMOTE_POLL_SECONDS)
        data = server.run_detail(run_id)
    click.echo("")
    print_run(data)
    return EXIT_CODES[RunStatus(data["status"])]


def _print_failed_tail(store: Store, run_id: int) -> None:
    from sqlalchemy import select

    from conveyor.store.models import Job, LogLine

    with store.session() as session:
        failed = session.scalars(
            select(Job)
            .where(Job.run_id == run_id, Job.status == JobStatus.FAILED)
            .order_by(Job.position)
        ).all()
        for job in failed:
            lines = session.scalars(
                select(LogLine.text)
                .where(LogLine.job_id == job.id)
                .order_by(LogLine.seq.desc())
                .limit(FAILED_LOG_TAIL)
            ).all()
            click.echo(f"\n--- {job.name}: {job.reason} (last {len(lines)} lines) ---", err=True)
            for text in reversed(lines):
                click.echo(text, err=True)
            click.echo(f"--- full log: conveyor logs {run_id} {job.name}", err=True)
