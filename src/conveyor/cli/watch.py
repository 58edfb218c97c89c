"""`conveyor watch [RUN]` and `conveyor watch --release N`: follow a run, then the release it
made, live until it serves in the last environment of its chain (or stops on the way).

It polls the same reads as `conveyor show` and `conveyor release`, so it works against a server
(CONVEYOR_URL) and on the local store alike, and can be started or stopped at any moment: it
prints what already happened, then each change as it comes."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from conveyor.cli.backend import Backend, backend
from conveyor.cli.common import STATUS_MARK, when
from conveyor.cli.delivery import Client, environment_list
from conveyor.cli.releases import timeline_event
from conveyor.errors import ConveyorError

RUN_ENDED = ("succeeded", "failed", "cancelled", "interrupted")
# A deployment of the release that ended without putting it in place: the journey stops there.
STOPPED = ("failed", "rolled_back", "rejected", "superseded", "cancelled")


class Watcher:
    """Prints each line once and again only when it changes, keyed by what it is about."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.said: dict[tuple[str, str], str] = {}

    def say(self, key: tuple[str, str], at: Any, line: str) -> None:
        if self.said.get(key) != line:
            self.said[key] = line
            self.echo(f"  {when(at)}  {line}")


def _job_line(job: Mapping[str, Any]) -> str:
    status = job["status"]
    took = f" in {job['duration']:.1f}s" if job.get("duration") is not None else ""
    return f"{STATUS_MARK.get(status, '·')} {job['name']} {status}{took}"


def _follow_run(source: Backend, run_id: int, watcher: Watcher, every: float) -> dict[str, Any]:
    run = source.run_detail(run_id)
    commit = f"{run['sha'][:12]} {run.get('subject') or ''}".rstrip()
    click.echo(f"watching run {run_id} of {run['service']} ({commit})")
    while True:
        for job in run["jobs"]:
            at = _latest(job) or run["created_at"]
            watcher.say(("job", job["name"]), at, _job_line(job))
        if run["status"] in RUN_ENDED:
            return run
        time.sleep(every)
        run = source.run_detail(run_id)


# The times an entry of the timeline carries, in the order they happen.
MOMENTS = ("at", "started_at", "healthy_at", "decided_at", "finished_at", "resolved_at")


def _latest(entry: Mapping[str, Any]) -> Any:
    """When the entry last changed: its state is printed at that time, not at its start."""
    return max((entry[k] for k in MOMENTS if entry.get(k) is not None), default=None)


def _entry_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    kind = entry["kind"]
    ident = entry.get("deployment") or entry.get("approval") or entry.get("incident")
    return kind, str(ident or "")


def _final_environment(source: Backend, release: Mapping[str, Any]) -> str | None:
    chain = environment_list(Client(source), release["service"])
    return chain[-1]["environment"] if chain else None


def _arrived(entries: list[dict[str, Any]], release_id: int, final: str) -> bool:
    """Whether a deployment of the release to the last environment has ended well (it may
    serve there a moment before its verification ends: the journey ends with the deployment)."""
    return any(
        entry["kind"] in ("deployment", "rollback")
        and entry.get("release") == release_id
        and entry.get("environment") == final
        and entry.get("status") == "succeeded"
        for entry in entries
    )


def _stop_reason(entries: list[dict[str, Any]], release_id: int) -> str | None:
    """Why the release will go no further, if a deployment of it ended without serving."""
    for entry in entries:
        if entry["kind"] == "deployment" and entry.get("status") in STOPPED:
            return (
                f"release {release_id} stopped at {entry['environment']}: deployment "
                f"{entry['deployment']} {entry['status']}"
            )
    return None


def _follow_release(source: Backend, release_id: int, watcher: Watcher, every: float) -> int:
    timeline = source.release_timeline(release_id)
    release = timeline["release"]
    final = _final_environment(source, release)
    click.echo(f"watching release {release_id} ({release['version']}) of {release['service']}")
    asked: set[int] = set()
    while True:
        for entry in timeline["entries"]:
            if entry["kind"] in ("commit", "run"):
                continue  # the run was followed above, or is in `conveyor release N`
            watcher.say(_entry_key(entry), _latest(entry), timeline_event(entry))
            pending = entry["kind"] == "approval" and entry["status"] == "pending"
            if pending and entry["approval"] not in asked:
                asked.add(entry["approval"])
                click.echo(
                    f"  waiting for a decision: conveyor approve {entry['approval']} "
                    f"(or conveyor reject {entry['approval']} --reason ...)"
                )
        if final is None:
            click.echo(f"release {release_id} has no environments to go to: it is done")
            return 0
        if _arrived(timeline["entries"], release_id, final):
            click.echo(f"release {release_id} serves in {final}")
            return 0
        stopped = _stop_reason(timeline["entries"], release_id)
        if stopped:
            click.echo(stopped)
            return 1
        time.sleep(every)
        timeline = source.release_timeline(release_id)


@click.command()
@click.argument("run_id", type=int, required=False)
@click.option("--release", "release_id", type=int, help="Follow this release instead of a run.")
@click.option(
    "--every",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between looks.",
)
def watch(run_id: int | None, release_id: int | None, every: float) -> None:
    """Follow a run (the newest if none is given), then its release, live until it serves in
    the last environment of its chain. Exit 0 when it got there; 1 when it stopped on the way
    (a failed run or deployment, a rollback, a rejection, a newer release took its place)."""
    if run_id is not None and release_id is not None:
        raise ConveyorError("give a run or --release, not both")
    source = backend()
    watcher = Watcher(click.echo)
    if release_id is None:
        if run_id is None:
            newest = source.list_runs(None, None, 1)
            if not newest:
                raise ConveyorError("there is no run to watch yet", hint="push, or `conveyor run`")
            run_id = int(newest[0]["id"])
        run = _follow_run(source, run_id, watcher, every)
        took = f" in {run['duration']:.1f}s" if run.get("duration") is not None else ""
        if run["status"] != "succeeded":
            click.echo(f"run {run_id} {run['status']}{took}: `conveyor logs {run_id}` says why")
            raise SystemExit(1)
        release_id = run.get("release")
        if release_id is None:
            click.echo(f"run {run_id} succeeded{took}; it made no release")
            return
        click.echo(f"run {run_id} succeeded{took}: release {release_id}")
    raise SystemExit(_follow_release(source, release_id, watcher, every))
