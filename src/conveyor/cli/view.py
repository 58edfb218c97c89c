"""What `conveyor run` shows while a run goes: a live table at a terminal, plain lines elsewhere.

Both views are fed by the store's events after each commit, so they show only what is recorded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import click

from conveyor.cli.common import STATUS_MARK, STATUS_STYLE, console, duration
from conveyor.events import EventType
from conveyor.store.db import Store
from conveyor.store.models import Event, Run

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

    from conveyor.sources.commits import QueuedRun


class RunView(Protocol):
    def begin(self, queued: QueuedRun) -> None: ...
    def event(self, ev: Event) -> None: ...
    def end(self, run_id: int) -> None: ...


def headline(queued: QueuedRun) -> str:
    c = queued.commit
    branch = queued.ref.removeprefix("refs/heads/") if queued.ref else "detached"
    return (
        f"run {queued.run_id} · {queued.pipeline.service} @ {c.short_sha} ({branch}) · "
        f"{c.subject} — {c.author_name}"
    )


def summary(store: Store, run_id: int) -> str:
    with store.session() as session:
        run = session.get_one(Run, run_id)
        text = f"run {run_id} {run.status} in {duration(run.started_at, run.finished_at)}"
        return f"{text}: {run.reason}" if run.reason else text


class PlainView:
    """One line per job change: readable in a CI log, no cursor tricks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, queued: QueuedRun) -> None:
        click.echo(headline(queued))

    def event(self, ev: Event) -> None:
        job = ev.data.get("job")
        if ev.type == EventType.TASKRUN_STARTED:
            click.echo(f"  {STATUS_MARK['running']} {job} started")
        elif ev.type == EventType.TASKRUN_FINISHED:
            status = ev.data["status"]
            took = f" in {ev.data['duration']:.1f}s" if "duration" in ev.data else ""
            why = f": {ev.data['reason']}" if ev.data.get("reason") else ""
            click.echo(f"  {STATUS_MARK.get(status, '?')} {job} {status}{took}{why}")
        elif ev.type == EventType.STEP_FINISHED and ev.data["status"] == "failed":
            click.echo(f"    step {ev.data['step']} failed: {ev.data.get('reason', '')}")

    def end(self, run_id: int) -> None:
        click.echo(summary(self.store, run_id))


@dataclass
class _JobRow:
    status: str = "pending"
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    note: str = ""
    needs: list[str] = field(default_factory=list)


class LiveView:
    """A table of jobs redrawn in place, with states, durations and the step running now."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[str, _JobRow] = {}
        self.live: Live | None = None

    def begin(self, queued: QueuedRun) -> None:
        from rich.live import Live

        console().print(f"[bold]{headline(queued)}[/bold]")
        self.rows = {j.name: _JobRow(needs=list(j.needs)) for j in queued.jobs}
        # get_renderable: every refresh redraws, so running jobs' clocks keep ticking.
        self.live = Live(
            console=console(),
            get_renderable=self._render,
            refresh_per_second=8,
            transient=False,
        )
        self.live.__enter__()

    def event(self, ev: Event) -> None:
        job = ev.data.get("job")
        if not isinstance(job, str) or job not in self.rows:
            return
        row = self.rows[job]
        if ev.type in (
            EventType.TASKRUN_QUEUED,
            EventType.TASKRUN_STARTED,
            EventType.TASKRUN_FINISHED,
        ):
            row.status = ev.data["status"]
            if ev.type == EventType.TASKRUN_STARTED:
                row.started = ev.ts
            if ev.type == EventType.TASKRUN_FINISHED:
                row.finished = ev.ts
                row.note = ev.data.get("reason") or ""
        elif ev.type == EventType.STEP_STARTED:
            attempt = ev.data.get("attempt", 1)
            row.note = ev.data["step"] + (f" (attempt {attempt})" if attempt > 1 else "")
        if self.live is not None:
            self.live.refresh()

    def _render(self) -> Table:
        from rich.table import Table

        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("", "job", "status", "time", "needs", ""):
            table.add_column(column)
        for name, row in self.rows.items():
            style = STATUS_STYLE.get(row.status, "")
            table.add_row(
                f"[{style}]{STATUS_MARK.get(row.status, '?')}[/]",
                name,
                f"[{style}]{row.status}[/]",
                duration(row.started, row.finished) if row.started else "",
                ", ".join(row.needs),
                row.note,
            )
        return table

    def end(self, run_id: int) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(None, None, None)
        console().print(summary(self.store, run_id))
