"""Run and job records: every change checked against the state machine and written with its
event in one transaction."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.engine.promotion import queue_first_environments
from conveyor.engine.scheduler import Decision, JobView
from conveyor.errors import ConveyorError, NotFound, StaleLease
from conveyor.events import EventType
from conveyor.plan import Condition, JobPlan, RunContext
from conveyor.states import (
    IllegalTransition,
    JobStatus,
    RunStatus,
    StepStatus,
    allowed,
    check_transition,
)
from conveyor.store.db import Store, Writer, db_now
from conveyor.store.models import Artifact, Job, Release, Run, Service, Step, utcnow

StatusT = TypeVar("StatusT", bound=enum.Enum)


def lock_service(w: Writer, service_id: int) -> None:
    """Serialise writers of one service's runs until this transaction ends: a row lock on
    PostgreSQL; SQLite's write transactions are serial already (BEGIN IMMEDIATE)."""
    if w.session.get_bind().dialect.name == "postgresql":
        w.session.execute(select(Service.id).where(Service.id == service_id).with_for_update())


def ensure_service(w: Writer, name: str, repository: str) -> Service:
    service = w.session.scalar(select(Service).where(Service.name == name))
    if service is None:
        service = Service(name=name, repository=repository, created_at=utcnow())
        w.session.add(service)
        w.session.flush()
        w.emit(EventType.SERVICE_REGISTERED, service=name, repository=repository)
    return service


def create_run(
    store: Store,
    *,
    service: str,
    repository: str,
    sha: str,
    ref: str | None,
    trigger: str,
    commit: Mapping[str, Any],
    pipeline: Mapping[str, Any],
    jobs: Sequence[JobPlan],
    owner: str | None = None,
    concurrency_group: str | None = None,
    supersede: bool = False,
    guard: Callable[[Writer], None] | None = None,
) -> int:
    """Record a queued run with all its jobs and steps; returns the run id.

    ``owner`` names the process that will drive it, so that recovery in another process does
    not take a freshly queued run for an abandoned one. ``guard`` runs in the same transaction
    with the service's row locked (it may raise to queue nothing): intake checks there that no
    other server queued the same push first.
    """
    with store.write() as w:
        svc = ensure_service(w, service, repository)
        if guard is not None:
            lock_service(w, svc.id)
            guard(w)
        run = Run(
            service_id=svc.id,
            status=RunStatus.QUEUED,
            sha=sha,
            ref=ref,
            trigger=trigger,
            commit=dict(commit),
            pipeline=dict(pipeline),
            created_at=utcnow(),
            cancel_requested=False,
            owner=owner,
            heartbeat_at=db_now(w.session) if owner else None,
            concurrency_group=concurrency_group,
        )
        for position, plan in enumerate(jobs):
            job = Job(
                name=plan.name,
                position=position,
                status=JobStatus.PENDING,
                needs=list(plan.needs),
                config=plan.model_dump(mode="json"),
                lease_token=0,
            )
            job.steps = [
                Step(position=i, name=s.name, status=StepStatus.PENDING, attempts=0)
                for i, s in enumerate(plan.steps)
            ]
            run.jobs.append(job)
        w.session.add(run)
        w.session.flush()
        w.emit(
            EventType.PIPELINERUN_QUEUED,
            service=service,
            run_id=run.id,
            sha=sha,
            ref=ref,
            trigger=trigger,
            jobs=[j.name for j in jobs],
            concurrency_group=concurrency_group,
        )
        if supersede and concurrency_group is not None:
            from conveyor.engine.dispatch import supersede_queued

            supersede_queued(w, run)
        return run.id


def get_run(w: Writer, run_id: int) -> Run:
    run = w.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"there is no run {run_id}")
    return run


def start_run(store: Store, run_id: int, owner: str) -> None:
    with store.write() as w:
        run = get_run(w, run_id)
        check_transition("run", RunStatus(run.status), RunStatus.RUNNING)
        now = utcnow()
        run.status = RunStatus.RUNNING
        run.started_at = now
        run.owner = owner
        run.heartbeat_at = db_now(w.session)  # judged by the database's clock (recovery)
        w.emit(EventType.PIPELINERUN_STARTED, service=run.service.name, run_id=run_id, owner=owner)


@dataclass(frozen=True)
class JobRef:
    """What stays fixed about a job for its whole life: enough to address it and its events."""

    id: int
    run_id: int
    name: str
    service: str
    needs: tuple[str, ...]
    condition: Condition
    continue_on_error: bool
    plan: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def run_context(run: Run) -> RunContext:
    """What every job of the run sees; the source is where this run reads its commit."""
    publish = run.pipeline.get("publish")
    registry = publish.get("registry") if isinstance(publish, dict) else None
    return RunContext(
        run_id=run.id,
        service=run.service.name,
        sha=run.sha,
        ref=run.ref,
        repository=run.commit.get("source") or run.service.repository,
        registry=registry if isinstance(registry, str) else None,
    )


def job_ref(job: Job, service: str) -> JobRef:
    return JobRef(
        id=job.id,
        run_id=job.run_id,
        name=job.name,
        service=service,
        needs=tuple(job.needs),
        condition=job.config.get("condition", "success"),
        continue_on_error=bool(job.config.get("continue_on_error", False)),
        plan=job.config,
    )


def job_refs_of(run: Run) -> list[JobRef]:
    return [job_ref(j, run.service.name) for j in run.jobs]


def job_refs(store: Store, run_id: int) -> dict[str, JobRef]:
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"there is no run {run_id}")
        return {ref.name: ref for ref in job_refs_of(run)}


def job_statuses(store: Store, run_id: int) -> dict[str, JobStatus]:
    with store.session() as session:
        rows = session.execute(select(Job.name, Job.status).where(Job.run_id == run_id))
        return {name: JobStatus(status) for name, status in rows}


def views_in(session: Session, refs: Mapping[str, JobRef]) -> dict[str, JobView]:
    """The scheduler's view of a run's jobs: fixed facts from `refs`, statuses read now."""
    if not refs:
        return {}
    run_id = next(iter(refs.values())).run_id
    rows = session.execute(select(Job.name, Job.status).where(Job.run_id == run_id))
    statuses = {name: JobStatus(status) for name, status in rows}
    return {
        name: JobView(statuses[name], ref.needs, ref.condition, ref.continue_on_error)
        for name, ref in refs.items()
    }


def job_views(store: Store, refs: Mapping[str, JobRef]) -> dict[str, JobView]:
    with store.session() as session:
        return views_in(session, refs)


def _sources(kind: type[StatusT], target: StatusT) -> list[str]:
    """The states from which ``target`` may be reached: the state machine, as a WHERE clause."""
    return [s.value for s in kind if allowed(s, target)]


@dataclass(frozen=True)
class Moved:
    at: dt.datetime
    started_at: dt.datetime | None
    lease_token: int


def move_job(
    w: Writer,
    ref: JobRef,
    status: JobStatus,
    reason: str | None = None,
    *,
    token: int | None = None,
    **values: Any,
) -> Moved:
    """Move a job to ``status`` if the rules (and, given a token, the lease) allow it.

    The check and the change are one UPDATE, so two writers racing on one job cannot both win.
    """
    now = utcnow()
    changes: dict[str, Any] = {"status": status, "reason": reason, **values}
    if status is JobStatus.RUNNING:
        changes["started_at"] = now
    if status.terminal:
        changes["finished_at"] = now
        changes["lease_expires_at"] = None
    stmt = update(Job).where(Job.id == ref.id, Job.status.in_(_sources(JobStatus, status)))
    if token is not None:
        stmt = stmt.where(Job.lease_token == token)
    row = w.session.execute(
        stmt.values(**changes).returning(Job.started_at, Job.lease_token),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    if row is None:
        current, held = w.session.execute(
            select(Job.status, Job.lease_token).where(Job.id == ref.id)
        ).one()
        if token is not None and held != token:
            raise StaleLease(
                f"job {ref.name} of run {ref.run_id} was leased again "
                f"(token {held}, this runner holds {token})"
            )
        raise IllegalTransition(f"job {ref.name}", JobStatus(current), status)
    started_at, lease_token = row
    if status.terminal and status is not JobStatus.SUCCEEDED:
        # A job succeeds only after its runner has finished every step.
        _close_steps(w, ref, status, now)
    kind = {
        JobStatus.QUEUED: EventType.TASKRUN_QUEUED,
        JobStatus.RUNNING: EventType.TASKRUN_STARTED,
    }.get(status, EventType.TASKRUN_FINISHED)
    data: dict[str, Any] = {"job": ref.name, "status": status.value}
    if reason:
        data["reason"] = reason
    if status.terminal and started_at is not None:
        data["duration"] = round((now - started_at).total_seconds(), 3)
    w.emit(kind, service=ref.service, run_id=ref.run_id, job_id=ref.id, **data)
    return Moved(now, started_at, lease_token)


def _close_steps(w: Writer, ref: JobRef, status: JobStatus, now: dt.datetime) -> None:
    """Steps left unfinished end with their job: those that never started are skipped (or
    cancelled / interrupted with the job), one caught mid-way ends as the job did."""
    if status in (JobStatus.CANCELLED, JobStatus.INTERRUPTED):
        pending = running = StepStatus(status.value)
    else:
        pending, running = StepStatus.SKIPPED, StepStatus.FAILED
    for current, target in ((StepStatus.PENDING, pending), (StepStatus.RUNNING, running)):
        check_transition("step", current, target)
        w.session.execute(
            update(Step)
            .where(Step.job_id == ref.id, Step.status == current)
            .values(status=target, finished_at=None if current is StepStatus.PENDING else now),
            execution_options={"synchronize_session": False},
        )


def apply_turn(
    store: Store,
    refs: Mapping[str, JobRef],
    decisions: Sequence[Decision],
    lease: Sequence[str] = (),
    *,
    runner: str = "local",
    lease_seconds: float = 30.0,
) -> dict[str, int]:
    """Decisions and leases of one scheduling turn in one transaction; returns the fencing
    token of each leased job."""
    with store.write() as w:
        for d in decisions:
            move_job(w, refs[d.job], d.status, d.reason)
        return {name: _lease(w, refs[name], runner, lease_seconds) for name in lease}


def _lease(w: Writer, ref: JobRef, runner: str, lease_seconds: float) -> int:
    return move_job(
        w,
        ref,
        JobStatus.RUNNING,
        runner=runner,
        lease_token=Job.lease_token + 1,
        lease_expires_at=db_now(w.session) + dt.timedelta(seconds=lease_seconds),
    ).lease_token


def lease_job(store: Store, ref: JobRef, runner: str, lease_seconds: float) -> int:
    """Hand a queued job to a runner; returns the fencing token it must report with."""
    with store.write() as w:
        return _lease(w, ref, runner, lease_seconds)


def close_run(w: Writer, run: Run, status: RunStatus, reason: str | None) -> None:
    """End a run; a run that succeeded yields its release in the same transaction."""
    check_transition("run", RunStatus(run.status), status)
    now = utcnow()
    run.status, run.reason, run.finished_at = status, reason, now
    data: dict[str, Any] = {"status": status.value}
    if reason:
        data["reason"] = reason
    if run.started_at:
        data["duration"] = round((now - run.started_at).total_seconds(), 3)
    w.emit(EventType.PIPELINERUN_FINISHED, service=run.service.name, run_id=run.id, **data)
    if status is RunStatus.SUCCEEDED:
        release = Release(
            service_id=run.service_id,
            run_id=run.id,
            sha=run.sha,
            ref=run.ref,
            created_at=now,
            # Read, not taken from run.jobs: statuses changed by UPDATEs in this transaction.
            evidence={
                "jobs": dict(
                    w.session.execute(
                        select(Job.name, Job.status).where(Job.run_id == run.id)
                    ).all()
                )
            },
        )
        w.session.add(release)
        w.session.flush()
        w.emit(
            EventType.RELEASE_CREATED,
            service=run.service.name,
            run_id=run.id,
            release=release.id,
            sha=run.sha,
            ref=run.ref,
        )
        queue_first_environments(w, release)


def finish_run(store: Store, run_id: int, status: RunStatus, reason: str | None) -> None:
    with store.write() as w:
        close_run(w, get_run(w, run_id), status, reason)


def heartbeat(store: Store, run_id: int) -> bool:
    """Say the driver is alive; returns whether someone asked for the run to be cancelled."""
    with store.write() as w:
        run = get_run(w, run_id)
        run.heartbeat_at = db_now(w.session)
        return run.cancel_requested


def request_cancel(store: Store, run_id: int, by: str) -> RunStatus:
    """Ask the run's driver to stop; the driver does the stopping and records the outcome."""
    with store.write() as w:
        run = get_run(w, run_id)
        status = RunStatus(run.status)
        if status.terminal:
            raise ConveyorError(f"run {run_id} has already {_ended(status)}")
        if not run.cancel_requested:
            run.cancel_requested = True
            w.emit(
                EventType.PIPELINERUN_CANCEL_REQUESTED,
                service=run.service.name,
                run_id=run_id,
                by=by,
            )
        return status


def _ended(status: RunStatus) -> str:
    return {
        RunStatus.SUCCEEDED: "succeeded",
        RunStatus.FAILED: "failed",
        RunStatus.CANCELLED: "been cancelled",
        RunStatus.INTERRUPTED: "been interrupted",
    }.get(status, f"ended ({status.value})")


def create_rerun(store: Store, run_id: int, *, failed_only: bool, trigger: str) -> int:
    """A new run of the same commit and plan. With `failed_only`, jobs that succeeded are
    carried over as succeeded, with their artifacts, and only the others run again."""
    with store.write() as w:
        old = get_run(w, run_id)
        if not RunStatus(old.status).terminal:
            raise ConveyorError(
                f"run {run_id} is still {old.status}", hint="cancel it or wait for it to end"
            )
        if not old.jobs:
            raise ConveyorError(f"run {run_id} has no jobs to run again (its file was invalid)")
        run = Run(
            service_id=old.service_id,
            status=RunStatus.QUEUED,
            sha=old.sha,
            ref=old.ref,
            trigger=trigger,
            commit=dict(old.commit),
            pipeline=dict(old.pipeline),
            created_at=utcnow(),
            cancel_requested=False,
            concurrency_group=old.concurrency_group,
        )
        reused: dict[str, int] = {}
        for job in old.jobs:
            keep = failed_only and job.status == JobStatus.SUCCEEDED
            new = Job(
                name=job.name,
                position=job.position,
                status=JobStatus.SUCCEEDED if keep else JobStatus.PENDING,
                reason=f"reused from run {run_id}" if keep else None,
                needs=list(job.needs),
                config=dict(job.config),
                lease_token=0,
                started_at=job.started_at if keep else None,
                finished_at=job.finished_at if keep else None,
            )
            new.steps = [
                Step(
                    position=s.position,
                    name=s.name,
                    status=s.status if keep else StepStatus.PENDING,
                    exit_code=s.exit_code if keep else None,
                    attempts=s.attempts if keep else 0,
                    started_at=s.started_at if keep else None,
                    finished_at=s.finished_at if keep else None,
                )
                for s in job.steps
            ]
            run.jobs.append(new)
            if keep:
                reused[job.name] = job.id
        w.session.add(run)
        w.session.flush()
        new_ids = {j.name: j.id for j in run.jobs}
        for artifact in w.session.scalars(
            select(Artifact).where(Artifact.run_id == run_id, Artifact.job_id.in_(reused.values()))
        ):
            name = next(n for n, jid in reused.items() if jid == artifact.job_id)
            w.session.add(
                Artifact(
                    run_id=run.id,
                    job_id=new_ids[name],
                    path=artifact.path,
                    digest=artifact.digest,
                    size=artifact.size,
                    created_at=artifact.created_at,
                )
            )
        w.emit(
            EventType.PIPELINERUN_QUEUED,
            service=old.service.name,
            run_id=run.id,
            sha=old.sha,
            ref=old.ref,
            trigger=trigger,
            rerun_of=run_id,
            failed_only=failed_only,
            reused=sorted(reused),
            jobs=[j.name for j in run.jobs],
        )
        return run.id
