"""The server's scheduling on a real store: FIFO queues, concurrency groups, supersede,
leases with fencing tokens, and lease expiry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from conveyor.engine import dispatch
from conveyor.engine.runs import create_run, move_job, request_cancel
from conveyor.errors import StaleLease
from conveyor.plan import JobPlan, StepPlan
from conveyor.states import JobStatus, RunStatus
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Event, Job, Run, Step, utcnow


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/c.db"))


def plan(name: str, needs: list[str] | None = None, runs_on: list[str] | None = None) -> JobPlan:
    return JobPlan(
        name=name,
        needs=needs or [],
        steps=[StepPlan(name="s", run="true")],
        runs_on=runs_on or [],
    )


def queue(store: Store, *jobs: JobPlan, group: str | None = None, supersede: bool = False) -> int:
    return create_run(
        store,
        service="svc",
        repository="/nowhere",
        sha="a" * 40,
        ref="refs/heads/main",
        trigger="test",
        commit={},
        pipeline={},
        jobs=list(jobs) or [plan("build")],
        concurrency_group=group,
        supersede=supersede,
    )


def status(store: Store, run_id: int) -> str:
    with store.session() as session:
        return session.get_one(Run, run_id).status


def finish_leased(store: Store, lease: dispatch.Lease, result: JobStatus) -> None:
    with store.write() as w:
        move_job(w, lease.ref, result, token=lease.token)


def test_runs_start_in_order_up_to_the_limit(store: Store) -> None:
    first, second, third = queue(store), queue(store), queue(store)
    assert dispatch.start_queued_runs(store, max_running=2) == [first, second]
    assert status(store, third) == RunStatus.QUEUED
    assert dispatch.start_queued_runs(store, max_running=2) == []


def test_a_concurrency_group_runs_one_at_a_time_in_fifo_order(store: Store) -> None:
    a1 = queue(store, group="deploy")
    a2 = queue(store, group="deploy")
    other = queue(store)
    assert dispatch.start_queued_runs(store, max_running=8) == [a1, other]
    dispatch.advance_runs(store)
    lease = dispatch.lease_next(store, "r", [])
    assert lease is not None
    assert lease.ref.run_id == a1
    finish_leased(store, lease, JobStatus.SUCCEEDED)
    assert dispatch.advance_runs(store) == [a1]
    assert dispatch.start_queued_runs(store, max_running=8) == [a2]


def test_supersede_cancels_older_queued_runs_visibly(store: Store) -> None:
    running = queue(store, group="deploy", supersede=True)
    dispatch.start_queued_runs(store, max_running=8)
    waiting = queue(store, group="deploy", supersede=True)
    newest = queue(store, group="deploy", supersede=True)
    assert status(store, running) == RunStatus.RUNNING  # a started run is never superseded
    assert status(store, waiting) == RunStatus.CANCELLED
    with store.session() as session:
        assert session.get_one(Run, waiting).reason == f"superseded by run {newest}"
        event = session.scalars(
            select(Event).where(Event.run_id == waiting, Event.type == "pipelinerun.finished")
        ).one()
    assert event.data["superseded_by"] == newest


def test_jobs_are_leased_by_label_with_a_new_token_each_time(store: Store) -> None:
    run_id = queue(store, plan("plain"), plan("gpu", runs_on=["gpu"]))
    dispatch.start_queued_runs(store, 8)
    dispatch.advance_runs(store)
    first = dispatch.lease_next(store, "cpu-runner", ["linux"])
    assert first is not None
    assert first.ref.name == "plain"
    assert dispatch.lease_next(store, "cpu-runner", ["linux"]) is None
    gpu = dispatch.lease_next(store, "gpu-runner", ["linux", "gpu"])
    assert gpu is not None
    assert gpu.ref.name == "gpu"
    assert first.context.run_id == run_id
    assert gpu.token == 1


def test_an_expired_lease_requeues_and_fences_the_old_runner(store: Store) -> None:
    queue(store)
    dispatch.start_queued_runs(store, 8)
    dispatch.advance_runs(store)
    lost = dispatch.lease_next(store, "runner-1", [])
    assert lost is not None
    with store.write() as w:
        w.session.execute(update(Job).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        w.session.execute(update(Step).values(status="running", started_at=utcnow()))
    assert dispatch.expire_leases(store) == [(lost.ref.run_id, "build")]
    with store.session() as session:
        job = session.scalars(select(Job)).one()
        assert job.status == JobStatus.QUEUED
        assert [s.status for s in job.steps] == ["pending"]  # the job starts over
    again = dispatch.lease_next(store, "runner-2", [])
    assert again is not None
    assert again.token == lost.token + 1
    with pytest.raises(StaleLease), store.write() as w:
        move_job(w, lost.ref, JobStatus.SUCCEEDED, token=lost.token)
    finish_leased(store, again, JobStatus.SUCCEEDED)
    assert dispatch.advance_runs(store) == [again.ref.run_id]


def test_a_job_lost_too_often_fails(store: Store) -> None:
    run_id = queue(store)
    dispatch.start_queued_runs(store, 8)
    dispatch.advance_runs(store)
    for _ in range(dispatch.REQUEUE_LIMIT + 1):
        assert dispatch.lease_next(store, "flaky", []) is not None
        with store.write() as w:
            w.session.execute(
                update(Job).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        dispatch.expire_leases(store)
    with store.session() as session:
        job = session.scalars(select(Job)).one()
    assert job.status == JobStatus.FAILED
    assert "stopped answering" in (job.reason or "")
    dispatch.advance_runs(store)
    assert status(store, run_id) == RunStatus.FAILED


def test_cancel_reaches_pending_jobs_and_the_run_ends_cancelled(store: Store) -> None:
    run_id = queue(store, plan("a"), plan("b", needs=["a"]))
    dispatch.start_queued_runs(store, 8)
    dispatch.advance_runs(store)
    lease = dispatch.lease_next(store, "r", [])
    assert lease is not None
    request_cancel(store, run_id, by="test")
    dispatch.advance_runs(store)
    finish_leased(store, lease, JobStatus.CANCELLED)
    assert dispatch.advance_runs(store) == [run_id]
    assert status(store, run_id) == RunStatus.CANCELLED


def test_a_server_start_gives_running_jobs_a_fresh_lease(store: Store) -> None:
    queue(store)
    dispatch.start_queued_runs(store, 8)
    dispatch.advance_runs(store)
    assert dispatch.lease_next(store, "r", []) is not None
    with store.write() as w:
        w.session.execute(update(Job).values(lease_expires_at=utcnow() - dt.timedelta(seconds=5)))
    assert dispatch.extend_running_leases(store) == 1
    assert dispatch.expire_leases(store) == []
