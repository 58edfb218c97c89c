"""The server's scheduling: start queued runs, move running runs forward, lease jobs to
runners, take back leases that expired.

Every function is a transaction on the store and keeps no state between calls, so any number
of server processes can run them side by side: on PostgreSQL the rows they act on are locked
(`FOR UPDATE SKIP LOCKED`), and every state change is a conditional UPDATE that only one
writer can win.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from conveyor.engine.runs import (
    JobRef,
    close_run,
    job_ref,
    job_refs_of,
    move_job,
    run_context,
    views_in,
)
from conveyor.engine.scheduler import decide, next_decisions, run_outcome
from conveyor.events import EventType
from conveyor.plan import RunContext
from conveyor.settings import Settings
from conveyor.states import JobStatus, RunStatus, StepStatus, check_transition
from conveyor.store.db import Store, Writer, db_now
from conveyor.store.models import Job, Run, Service, Step, utcnow

# How long a lease lasts without a heartbeat, unless told (Settings.lease_seconds, which the
# server reads at start; failure drills and tests shorten it).
DEFAULT_LEASE_SECONDS = Settings().lease_seconds
# A job whose runner vanished is given to another runner this many times, then fails.
REQUEUE_LIMIT = 2


@dataclass(frozen=True)
class Lease:
    """A job handed to a runner: everything it needs to execute and report."""

    ref: JobRef
    token: int
    context: RunContext
    expires_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.ref.id,
            "run_id": self.ref.run_id,
            "job": self.ref.name,
            "token": self.token,
            "plan": dict(self.ref.plan),
            "context": self.context.model_dump(mode="json"),
            "expires_at": self.expires_at.isoformat(),
        }


def _locked(stmt: Any, w: Writer) -> Any:
    """Row locks where the database has them; SQLite serialises writers anyway."""
    if w.session.bind is not None and w.session.bind.dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def start_queued_runs(store: Store, max_running: int) -> list[int]:
    """Start queued runs in FIFO order, never two of one concurrency group at once."""
    with store.session() as session:
        if session.scalar(select(Run.id).where(Run.status == RunStatus.QUEUED).limit(1)) is None:
            return []
    with store.write() as w:
        running = w.session.scalar(
            select(func.count()).select_from(Run).where(Run.status == RunStatus.RUNNING)
        )
        slots = max_running - (running or 0)
        if slots <= 0:
            return []
        busy = set(
            w.session.scalars(
                select(Run.concurrency_group).where(
                    Run.status == RunStatus.RUNNING, Run.concurrency_group.is_not(None)
                )
            )
        )
        queued = w.session.scalars(
            _locked(select(Run).where(Run.status == RunStatus.QUEUED).order_by(Run.id), w)
        ).all()
        started: list[int] = []
        for run in queued:
            if len(started) >= slots:
                break
            if run.concurrency_group is not None:
                if run.concurrency_group in busy:
                    continue
                busy.add(run.concurrency_group)
            check_transition("run", RunStatus(run.status), RunStatus.RUNNING)
            run.status = RunStatus.RUNNING
            run.started_at = utcnow()
            w.emit(
                EventType.PIPELINERUN_STARTED,
                service=run.service.name,
                run_id=run.id,
                owner="server",
            )
            started.append(run.id)
        return started


def supersede_queued(w: Writer, run: Run) -> list[int]:
    """Cancel the group's older runs that have not started, naming the run that replaced them."""
    older = w.session.scalars(
        select(Run).where(
            Run.concurrency_group == run.concurrency_group,
            Run.status == RunStatus.QUEUED,
            Run.id < run.id,
        )
    ).all()
    for old in older:
        check_transition("run", RunStatus(old.status), RunStatus.CANCELLED)
        reason = f"superseded by run {run.id}"
        for ref in job_refs_of(old):
            move_job(w, ref, JobStatus.CANCELLED, reason)
        old.status = RunStatus.CANCELLED
        old.reason = reason
        old.finished_at = utcnow()
        w.emit(
            EventType.PIPELINERUN_FINISHED,
            service=old.service.name,
            run_id=old.id,
            status=RunStatus.CANCELLED.value,
            reason=reason,
            superseded_by=run.id,
        )
    return [o.id for o in older]


def _refs_cache(store: Store) -> dict[int, dict[str, JobRef]]:
    """Job facts that never change, per running run (dropped when the run ends)."""
    cache: dict[int, dict[str, JobRef]] = store.cache.setdefault("dispatch.job_refs", {})
    return cache


def _run_refs(cache: dict[int, dict[str, JobRef]], run: Run) -> dict[str, JobRef]:
    refs = cache.get(run.id)
    if refs is None:
        refs = cache[run.id] = {ref.name: ref for ref in job_refs_of(run)}
    return refs


def advance_runs(store: Store) -> list[int]:
    """Apply the scheduler's decisions to every running run; finish the ones that are done.
    Returns the runs that finished. Runs with nothing to decide cost one read, no write."""
    finished: list[int] = []
    cache = _refs_cache(store)
    with store.session() as session:
        running = session.scalars(
            select(Run).where(Run.status == RunStatus.RUNNING, Run.owner.is_(None))
        ).all()
        todo = []
        for run in running:
            views = views_in(session, _run_refs(cache, run))
            if (
                run.cancel_requested
                or all(v.status.terminal for v in views.values())
                or next_decisions(views)
            ):
                todo.append(run.id)
        live = {run.id for run in running}
    for run_id in list(cache):
        if run_id not in live:
            del cache[run_id]
    for run_id in todo:
        with store.write() as w:
            locked = w.session.scalars(
                _locked(select(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING), w)
            ).one_or_none()
            if locked is None:
                continue
            refs = _run_refs(cache, locked)
            views = views_in(w.session, refs)
            for d in decide(views, locked.cancel_requested):
                move_job(w, refs[d.job], d.status, d.reason)
            if all(v.status.terminal for v in views.values()):
                status, reason = run_outcome(views, locked.cancel_requested)
                close_run(w, locked, status, reason)
                finished.append(run_id)
    return finished


def lease_next(
    store: Store,
    runner: str,
    labels: Sequence[str],
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    services: Collection[str] = (),
) -> Lease | None:
    """Give the oldest queued job this runner can take (its `runs_on` labels are a subset of
    the runner's; its service among ``services``, when given) to the runner, with a new
    fencing token."""
    have = set(labels)
    queued = select(Job).where(Job.status == JobStatus.QUEUED)
    if services:
        # In the query, not after it: a runner of one service must not starve behind the first
        # hundred jobs of others. A subquery keeps the row lock on jobs alone.
        queued = queued.where(
            Job.run_id.in_(
                select(Run.id)
                .join(Service, Run.service_id == Service.id)
                .where(Service.name.in_(sorted(services)))
            )
        )
    with store.write() as w:
        candidates = w.session.scalars(_locked(queued.order_by(Job.id).limit(100), w)).all()
        for job in candidates:
            if not set(job.config.get("runs_on") or []) <= have:
                continue
            # The database's clock gives the lease, so every server judges it alike.
            now = db_now(w.session)
            run = job.run
            ref = job_ref(job, run.service.name)
            expires = now + dt.timedelta(seconds=lease_seconds)
            token = move_job(
                w,
                ref,
                JobStatus.RUNNING,
                runner=runner,
                lease_token=Job.lease_token + 1,
                lease_expires_at=expires,
                report_seq=0,
            ).lease_token
            context = run_context(run)
            return Lease(ref, token, context, expires)
    return None


def expire_leases(store: Store, requeue_limit: int = REQUEUE_LIMIT) -> list[tuple[int, str]]:
    """Jobs whose runner stopped heartbeating go back to the queue (their steps start over),
    or fail once they have been lost too often. Returns (run id, job) of each.

    Expiry is judged by the database's clock, the one every lease was given by: a server whose
    own clock runs ahead takes no lease away early."""
    expired: list[tuple[int, str]] = []
    with store.session() as session:
        now = db_now(session)
        if (
            session.scalar(
                select(Job.id)
                .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
                .limit(1)
            )
            is None
        ):
            return expired
    with store.write() as w:
        now = db_now(w.session)
        jobs = w.session.scalars(
            _locked(
                select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now), w
            )
        ).all()
        for job in jobs:
            if job.run.owner is not None:
                continue  # driven by `conveyor run` in-process; recovery handles it
            ref = job_ref(job, job.run.service.name)
            lost = f"runner {job.runner or '?'} stopped answering (lease {job.lease_token} expired)"
            if job.lease_token <= requeue_limit:
                move_job(w, ref, JobStatus.QUEUED, lost)
                reset_steps(w, job.id)
                w.emit(
                    EventType.TASKRUN_REQUEUED,
                    service=ref.service,
                    run_id=ref.run_id,
                    job_id=ref.id,
                    job=ref.name,
                    runner=job.runner,
                    lease=job.lease_token,
                )
            else:
                move_job(w, ref, JobStatus.FAILED, lost)
            expired.append((job.run_id, job.name))
    return expired


def reset_steps(w: Writer, job_id: int) -> None:
    """The one way back for steps: a job given to a new runner starts from its first step.
    (The earlier attempt's events stay in the log.)"""
    w.session.execute(
        update(Step)
        .where(Step.job_id == job_id)
        .values(
            status=StepStatus.PENDING,
            started_at=None,
            finished_at=None,
            exit_code=None,
            reason=None,
            attempts=0,
        ),
        execution_options={"synchronize_session": False},
    )


def extend_running_leases(store: Store, seconds: float = DEFAULT_LEASE_SECONDS) -> int:
    """At server start: runners could not reach a dead server, so give them a full lease
    to come back before their jobs are taken away."""
    with store.write() as w:
        until = db_now(w.session) + dt.timedelta(seconds=seconds)
        result = w.session.execute(
            update(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < until)
            .values(lease_expires_at=until),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
