"""Run and job records: every change checked against the state machine and written with its
event in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from conveyor.engine.plan import JobPlan
from conveyor.engine.scheduler import JobView
from conveyor.engine.states import JobStatus, RunStatus, StepStatus, check_transition
from conveyor.errors import ConveyorError, NotFound
from conveyor.store.db import Store, Writer
from conveyor.store.models import Job, Run, Service, Step, utcnow


def ensure_service(w: Writer, name: str, repository: str) -> Service:
    service = w.session.scalar(select(Service).where(Service.name == name))
    if service is None:
        service = Service(name=name, repository=repository, created_at=utcnow())
        w.session.add(service)
        w.session.flush()
        w.emit("service.registered", service=name, repository=repository)
    elif service.repository != repository:
        service.repository = repository
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
) -> int:
    """Record a queued run with all its jobs and steps; returns the run id.

    ``owner`` names the process that will drive it, so that recovery in another process does
    not take a freshly queued run for an abandoned one.
    """
    with store.write() as w:
        svc = ensure_service(w, service, repository)
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
            heartbeat_at=utcnow() if owner else None,
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
            "pipelinerun.queued",
            service=service,
            run_id=run.id,
            sha=sha,
            ref=ref,
            trigger=trigger,
            jobs=[j.name for j in jobs],
        )
        return run.id


def get_run(w: Writer, run_id: int) -> Run:
    run = w.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"there is no run {run_id}")
    return run


def get_job(w: Writer, run_id: int, name: str) -> Job:
    job = w.session.scalar(select(Job).where(Job.run_id == run_id, Job.name == name))
    if job is None:
        raise NotFound(f"run {run_id} has no job '{name}'")
    return job


def start_run(store: Store, run_id: int, owner: str) -> None:
    with store.write() as w:
        run = get_run(w, run_id)
        check_transition("run", RunStatus(run.status), RunStatus.RUNNING)
        now = utcnow()
        run.status = RunStatus.RUNNING
        run.started_at = now
        run.owner = owner
        run.heartbeat_at = now
        w.emit("pipelinerun.started", service=run.service.name, run_id=run_id, owner=owner)


def job_views(store: Store, run_id: int) -> dict[str, JobView]:
    with store.session() as session:
        jobs = session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.position))
        return {
            j.name: JobView(
                status=JobStatus(j.status),
                needs=tuple(j.needs),
                condition=j.config.get("condition", "success"),
                continue_on_error=bool(j.config.get("continue_on_error", False)),
            )
            for j in jobs
        }


def set_job_status(
    w: Writer, run: Run, job: Job, status: JobStatus, reason: str | None = None
) -> None:
    current = JobStatus(job.status)
    check_transition(f"job {job.name}", current, status)
    now = utcnow()
    job.status = status
    job.reason = reason
    if status is JobStatus.RUNNING:
        job.started_at = now
    if status.terminal:
        job.finished_at = now
        job.lease_expires_at = None
        # Steps that never got to run end with their job.
        step_status = {
            JobStatus.SKIPPED: StepStatus.SKIPPED,
            JobStatus.INTERRUPTED: StepStatus.INTERRUPTED,
        }.get(status, StepStatus.CANCELLED)
        for step in job.steps:
            if not StepStatus(step.status).terminal:
                check_transition(f"step {step.name}", StepStatus(step.status), step_status)
                step.status = step_status
                step.finished_at = now if step.started_at else None
    kind = {
        JobStatus.QUEUED: "taskrun.queued",
        JobStatus.RUNNING: "taskrun.started",
    }.get(status, "taskrun.finished")
    data: dict[str, Any] = {"job": job.name, "status": status.value}
    if reason:
        data["reason"] = reason
    if status.terminal and job.started_at:
        data["duration"] = round((now - job.started_at).total_seconds(), 3)
    w.emit(kind, service=run.service.name, run_id=run.id, job_id=job.id, **data)


def apply_job_status(
    store: Store, run_id: int, name: str, status: JobStatus, reason: str | None = None
) -> None:
    with store.write() as w:
        run = get_run(w, run_id)
        set_job_status(w, run, get_job(w, run_id, name), status, reason)


def lease_job(store: Store, run_id: int, name: str, runner: str, lease_seconds: float) -> int:
    """Hand a queued job to a runner; returns the fencing token it must report with."""
    with store.write() as w:
        run = get_run(w, run_id)
        job = get_job(w, run_id, name)
        job.lease_token += 1
        job.runner = runner
        job.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_seconds)
        set_job_status(w, run, job, JobStatus.RUNNING)
        return job.lease_token


def finish_run(store: Store, run_id: int, status: RunStatus, reason: str | None) -> None:
    with store.write() as w:
        run = get_run(w, run_id)
        check_transition("run", RunStatus(run.status), status)
        now = utcnow()
        run.status = status
        run.reason = reason
        run.finished_at = now
        data: dict[str, Any] = {"status": status.value}
        if reason:
            data["reason"] = reason
        if run.started_at:
            data["duration"] = round((now - run.started_at).total_seconds(), 3)
        w.emit("pipelinerun.finished", service=run.service.name, run_id=run_id, **data)


def heartbeat(store: Store, run_id: int) -> bool:
    """Say the driver is alive; returns whether someone asked for the run to be cancelled."""
    with store.write() as w:
        run = get_run(w, run_id)
        run.heartbeat_at = utcnow()
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
            w.emit("pipelinerun.cancel_requested", service=run.service.name, run_id=run_id, by=by)
        return status


def _ended(status: RunStatus) -> str:
    return {
        RunStatus.SUCCEEDED: "succeeded",
        RunStatus.FAILED: "failed",
        RunStatus.CANCELLED: "been cancelled",
        RunStatus.INTERRUPTED: "been interrupted",
    }.get(status, f"ended ({status.value})")
