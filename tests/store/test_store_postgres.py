"""The engine's state changes on a real database: PostgreSQL (a fresh database per test) and
SQLite, through the same functions the driver and the runners use."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool
from tests.conftest import Conveyor, GitRepo

from conveyor.engine.runs import (
    JobRef,
    apply_turn,
    create_run,
    finish_run,
    job_refs,
    job_statuses,
    job_views,
    lease_job,
    move_job,
    request_cancel,
    start_run,
)
from conveyor.engine.scheduler import Decision, next_decisions, run_outcome
from conveyor.errors import ConveyorError, StaleLease
from conveyor.plan import JobPlan, StepPlan
from conveyor.states import IllegalTransition, JobStatus, RunStatus
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Event, Job, Run, Step

J = JobStatus


def plan(name: str, *needs: str) -> JobPlan:
    return JobPlan(
        name=name,
        needs=list(needs),
        steps=[StepPlan(name=f"{name} one", run="true"), StepPlan(name=f"{name} two", run="true")],
    )


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    store = open_store(Settings(home=tmp_path / "home", database_url=database_url))
    yield store
    store.close()


def new_run(store: Store, owner: str | None = "test-driver") -> int:
    return create_run(
        store,
        service="shop",
        repository="/srv/shop.git",
        sha="a" * 40,
        ref="refs/heads/main",
        trigger="manual",
        commit={"subject": "ship it", "author_name": "Ada Author"},
        pipeline={"service": "shop"},
        jobs=[plan("build"), plan("test", "build"), plan("deploy", "test")],
        owner=owner,
    )


def event_types(store: Store, run_id: int) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(select(Event.type).where(Event.run_id == run_id).order_by(Event.id))
        )


def run_row(store: Store, run_id: int) -> Run:
    with store.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def test_create_run_records_jobs_steps_and_the_queued_event(store: Store) -> None:
    run_id = new_run(store)
    refs = job_refs(store, run_id)

    assert list(refs) == ["build", "test", "deploy"]
    assert all(ref.run_id == run_id and ref.service == "shop" for ref in refs.values())
    assert refs["deploy"].needs == ("test",)
    assert refs["build"].plan["steps"][0]["name"] == "build one"
    with store.session() as session:
        steps = session.scalars(
            select(Step.job_id).where(Step.job_id.in_([r.id for r in refs.values()]))
        ).all()
    assert len(steps) == 6
    assert job_statuses(store, run_id) == {
        "build": J.PENDING,
        "test": J.PENDING,
        "deploy": J.PENDING,
    }
    run = run_row(store, run_id)
    assert run.status == RunStatus.QUEUED
    assert run.created_at.tzinfo is dt.UTC
    assert run.commit == {"subject": "ship it", "author_name": "Ada Author"}
    assert event_types(store, run_id) == ["pipelinerun.queued"]
    with store.session() as session:
        queued = session.scalars(select(Event).where(Event.run_id == run_id)).one()
    assert queued.data["jobs"] == ["build", "test", "deploy"]


def drive_one_turn(store: Store, refs: dict[str, JobRef]) -> dict[str, int]:
    """What the driver does each turn: decide, then queue and lease in one transaction."""
    decisions = next_decisions(job_views(store, refs))
    queued = [d.job for d in decisions if d.status is J.QUEUED]
    return apply_turn(store, refs, decisions, queued, runner="runner-1", lease_seconds=30)


def test_a_run_goes_through_every_state_and_fences_stale_runners(store: Store) -> None:
    run_id = new_run(store)
    refs = job_refs(store, run_id)
    start_run(store, run_id, owner="test-driver")

    tokens = drive_one_turn(store, refs)
    assert tokens == {"build": 1}
    assert job_statuses(store, run_id)["build"] is J.RUNNING
    with store.session() as session:
        build = session.get(Job, refs["build"].id)
        assert build is not None
        assert build.runner == "runner-1"
        assert build.lease_expires_at is not None
        assert build.lease_expires_at > dt.datetime.now(dt.UTC)

    # The lease expires: the job goes back to the queue and another runner takes it.
    with store.write() as w:
        move_job(w, refs["build"], J.QUEUED, "lease expired", token=tokens["build"])
    assert lease_job(store, refs["build"], "runner-2", 30) == 2

    # The first runner comes back and reports: fenced off, and nothing changes.
    with pytest.raises(StaleLease, match="token 2, this runner holds 1"), store.write() as w:
        move_job(w, refs["build"], J.SUCCEEDED, token=1)
    assert job_statuses(store, run_id)["build"] is J.RUNNING

    # A pending job cannot jump to succeeded; the failed attempt leaves no trace.
    with pytest.raises(IllegalTransition, match="from pending to succeeded"), store.write() as w:
        move_job(w, refs["deploy"], J.SUCCEEDED)
    with pytest.raises(IllegalTransition, match="from running to pending"), store.write() as w:
        move_job(w, refs["build"], J.PENDING, token=2)

    with store.write() as w:
        moved = move_job(w, refs["build"], J.SUCCEEDED, token=2)
    assert moved.lease_token == 2
    assert moved.started_at is not None
    assert moved.started_at.tzinfo is dt.UTC

    for name in ("test", "deploy"):
        tokens = drive_one_turn(store, refs)
        assert tokens == {name: 1}
        with store.write() as w:
            move_job(w, refs[name], J.SUCCEEDED, token=tokens[name])
    assert drive_one_turn(store, refs) == {}

    outcome, reason = run_outcome(job_views(store, refs), False)
    assert outcome is RunStatus.SUCCEEDED
    finish_run(store, run_id, outcome, reason)
    with pytest.raises(IllegalTransition):
        finish_run(store, run_id, RunStatus.FAILED, "twice")

    run = run_row(store, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.started_at is not None
    assert run.finished_at is not None
    assert run.started_at <= run.finished_at
    assert set(job_statuses(store, run_id).values()) == {J.SUCCEEDED}
    assert event_types(store, run_id) == [
        "pipelinerun.queued",
        "pipelinerun.started",
        *["taskrun.queued", "taskrun.started"],
        *["taskrun.queued", "taskrun.started", "taskrun.finished"],  # build: requeued, then ok
        *["taskrun.queued", "taskrun.started", "taskrun.finished"],  # test
        *["taskrun.queued", "taskrun.started", "taskrun.finished"],  # deploy
        "pipelinerun.finished",
        "release.created",  # a run that succeeded yields its release
    ]
    with store.session() as session:
        finished = session.scalars(
            select(Event).where(Event.run_id == run_id, Event.type == "pipelinerun.finished")
        ).one()
    assert finished.data["status"] == "succeeded"
    assert 0 <= finished.data["duration"] < 60


def test_a_failed_job_closes_its_steps_and_skips_its_dependants(store: Store) -> None:
    run_id = new_run(store)
    refs = job_refs(store, run_id)
    start_run(store, run_id, owner="test-driver")
    tokens = drive_one_turn(store, refs)
    with store.write() as w:
        move_job(w, refs["build"], J.FAILED, "step build one exited 1", token=tokens["build"])
    assert drive_one_turn(store, refs) == {}  # test is skipped
    assert drive_one_turn(store, refs) == {}  # and so deploy
    assert job_statuses(store, run_id) == {
        "build": J.FAILED,
        "test": J.SKIPPED,
        "deploy": J.SKIPPED,
    }
    with store.session() as session:
        steps = session.scalars(select(Step.status).where(Step.job_id == refs["build"].id))
        assert list(steps) == ["skipped", "skipped"]
    assert run_outcome(job_views(store, refs), False) == (RunStatus.FAILED, "job build failed")
    finish_run(store, run_id, RunStatus.FAILED, "job build failed")
    run = run_row(store, run_id)
    assert (run.status, run.reason) == ("failed", "job build failed")
    assert event_types(store, run_id)[-1] == "pipelinerun.finished"


def test_cancel_is_requested_once_and_refused_after_the_end(store: Store) -> None:
    run_id = new_run(store)
    assert request_cancel(store, run_id, by="ada") is RunStatus.QUEUED
    assert request_cancel(store, run_id, by="bob") is RunStatus.QUEUED
    assert run_row(store, run_id).cancel_requested is True
    assert event_types(store, run_id).count("pipelinerun.cancel_requested") == 1

    refs = job_refs(store, run_id)
    apply_turn(store, refs, [Decision(name, J.CANCELLED) for name in refs])
    finish_run(store, run_id, RunStatus.CANCELLED, "cancelled by ada")
    with pytest.raises(ConveyorError, match="has already been cancelled"):
        request_cancel(store, run_id, by="ada")
    with store.session() as session:
        steps = session.scalars(
            select(Step.status).join(Job).where(Job.run_id == run_id).distinct()
        )
        assert set(steps) == {"cancelled"}


def test_a_turn_is_one_transaction(store: Store) -> None:
    """A turn whose second decision is illegal leaves the first one undone too."""
    run_id = new_run(store)
    refs = job_refs(store, run_id)
    turn = [Decision("build", J.QUEUED), Decision("deploy", J.SUCCEEDED)]
    with pytest.raises(IllegalTransition):
        apply_turn(store, refs, turn)
    assert set(job_statuses(store, run_id).values()) == {J.PENDING}
    assert event_types(store, run_id) == ["pipelinerun.queued"]


def test_two_runners_racing_for_one_job_cannot_both_win(store: Store) -> None:
    run_id = new_run(store)
    refs = job_refs(store, run_id)
    apply_turn(store, refs, [Decision("build", J.QUEUED)])
    barrier = threading.Barrier(8)
    won: list[int] = []
    lost: list[BaseException] = []

    def take(runner: str) -> None:
        barrier.wait(timeout=10)
        try:
            won.append(lease_job(store, refs["build"], runner, 30))
        except IllegalTransition as exc:
            lost.append(exc)

    threads = [threading.Thread(target=take, args=(f"runner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert won == [1]
    assert len(lost) == 7
    assert event_types(store, run_id).count("taskrun.started") == 1


PIPELINE = """\
service: shop
jobs:
  build:
    run: echo built > {trace}/build
  test:
    needs: [build]
    steps:
      - name: unit
        run: test -f {trace}/build && echo unit ok
  deploy:
    needs: [test]
    run: echo deployed
"""


def test_the_cli_runs_a_pipeline_on_the_database_it_is_given(
    repo: GitRepo, conveyor: Conveyor, database_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    sha = repo.commit("pipeline", {"conveyor.yml": PIPELINE.format(trace=trace)})
    conveyor.extra_env["CONVEYOR_DATABASE_URL"] = database_url
    conveyor.extra_env["CONVEYOR_SANDBOX"] = "off"  # the jobs share the trace folder

    result = conveyor("run", timeout=120)
    assert result.returncode == 0, result.output
    assert "run 1 succeeded" in result.stdout

    [run] = conveyor("runs", "--json", check=True).json()
    assert (run["id"], run["service"], run["status"], run["sha"]) == (1, "shop", "succeeded", sha)
    assert run["subject"] == "pipeline"
    assert dt.datetime.fromisoformat(run["started_at"]).tzinfo is not None
    shown = conveyor("show", "1", "--json", check=True).json()
    assert [(j["name"], j["status"]) for j in shown["jobs"]] == [
        ("build", "succeeded"),
        ("test", "succeeded"),
        ("deploy", "succeeded"),
    ]

    # The record is in the database named, and nowhere else.
    if database_url.startswith("postgresql"):
        assert not (conveyor.home / "conveyor.db").exists()
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows: list[Any] = list(conn.execute(text("SELECT status, sha FROM runs")))
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("succeeded", sha)]
