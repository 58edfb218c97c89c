"""The log store's ceiling on SQLite and PostgreSQL, through the recorder every runner's
reports go through (docs/decisions/0016-bounded-storage.md): lines stored under it, the oldest
finished run's log removed to make room, one marker when nothing is left to remove, and the
store's count equal to what it holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conveyor.engine.job_reports import JobRecorder
from conveyor.engine.runs import apply_turn, create_run, finish_run, job_refs, start_run
from conveyor.engine.scheduler import Decision
from conveyor.plan import JobPlan, StepPlan
from conveyor.states import JobStatus, RunStatus
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Job, LogLine, StoreUsage

CEILING = 20_000
LINE = "x" * 49  # 49 bytes


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    store = open_store(Settings(home=tmp_path / "home", database_url=database_url))
    yield store
    store.close()


def running_job(store: Store) -> tuple[int, JobRecorder]:
    run_id = create_run(
        store,
        service="shop",
        repository="/srv/shop.git",
        sha="a" * 40,
        ref="refs/heads/main",
        trigger="manual",
        commit={},
        pipeline={"service": "shop"},
        jobs=[JobPlan(name="build", steps=[StepPlan(name="build", run="true")])],
        owner="test-driver",
    )
    refs = job_refs(store, run_id)
    start_run(store, run_id, owner="test-driver")
    token = apply_turn(store, refs, [Decision("build", JobStatus.QUEUED)], ["build"])["build"]
    return run_id, JobRecorder(store, refs["build"], token, log_ceiling=CEILING)


def log(store: Store, recorder: JobRecorder, lines: int) -> None:
    now = dt.datetime.now(dt.UTC)
    with store.write() as w:
        recorder.log(w, 0, [(now, LINE)] * lines)


def texts(store: Store, run_id: int) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(
                select(LogLine.text).join(Job).where(Job.run_id == run_id).order_by(LogLine.seq)
            )
        )


def stored(store: Store) -> tuple[int, int]:
    """(bytes the lines hold, bytes the store counts)."""
    with store.session() as session:
        held = sum(len(t.encode()) for t in session.scalars(select(LogLine.text)))
        counted = session.scalar(select(StoreUsage.bytes).where(StoreUsage.name == "logs"))
        jobs = session.scalar(select(func.sum(Job.log_bytes)))
    assert counted == jobs
    return held, int(counted or 0)


def test_the_ceiling_removes_the_oldest_finished_log_first_then_stops_with_one_marker(
    store: Store,
) -> None:
    first, recorder = running_job(store)
    for _ in range(5):  # 5 x 4,900 bytes: the fifth batch is cut
        log(store, recorder, 100)
    lines = texts(store, first)
    assert lines.count(LINE) == CEILING // len(LINE)  # what fitted of the fifth batch too
    assert "the server's log store is full" in lines[-1]
    log(store, recorder, 1)  # after the marker, nothing more of this attempt
    assert texts(store, first) == lines
    held, counted = stored(store)
    assert held == counted <= CEILING + len(lines[-1])
    with store.write() as w:
        recorder.job_finished(w, JobStatus.SUCCEEDED, None)
    finish_run(store, first, RunStatus.SUCCEEDED, None)

    second, recorder = running_job(store)
    log(store, recorder, 100)
    assert texts(store, second) == [LINE] * 100
    old = texts(store, first)
    assert len(old) == 1
    assert "this job's log was removed" in old[0]
    held, counted = stored(store)
    assert held == counted <= CEILING
