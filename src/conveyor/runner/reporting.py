"""How a runner tells the store what a job is doing.

The built-in runner writes straight to the store through :class:`StoreReporter`; a remote agent
sends the same calls over HTTP. Every call carries the job's fencing token, so a runner whose
lease was taken away cannot change a job that now belongs to someone else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import func, insert, select

from conveyor.engine.runs import get_job, get_run, set_job_status
from conveyor.engine.states import JobStatus, StepStatus, check_transition
from conveyor.errors import ConveyorError
from conveyor.runner.artifacts import ArtifactFile
from conveyor.store.db import Store, Writer
from conveyor.store.models import Artifact, Job, LogLine, Run, Step, utcnow

LogBatch = Sequence[tuple[dt.datetime, str]]


class StaleLease(ConveyorError):
    """The job was leased to another runner since this one took it."""


class JobReporter(Protocol):
    async def step_started(self, position: int, attempt: int) -> None: ...
    async def step_process(self, position: int, pid: int) -> None: ...
    async def log(self, position: int | None, lines: LogBatch) -> None: ...
    async def step_finished(
        self,
        position: int,
        status: StepStatus,
        exit_code: int | None,
        reason: str | None,
        attempts: int,
    ) -> None: ...
    async def artifacts(self, files: Sequence[ArtifactFile]) -> None: ...
    async def job_finished(self, status: JobStatus, reason: str | None) -> None: ...


class StoreReporter:
    def __init__(self, store: Store, run_id: int, job_name: str, token: int) -> None:
        self.store = store
        self.run_id = run_id
        self.job_name = job_name
        self.token = token
        with store.session() as session:
            job = session.scalar(select(Job).where(Job.run_id == run_id, Job.name == job_name))
            if job is None:
                raise ConveyorError(f"run {run_id} has no job '{job_name}'")
            self.job_id = job.id
            self.service = session.get_one(Run, run_id).service.name
            last = session.scalar(select(func.max(LogLine.seq)).where(LogLine.job_id == job.id))
        self._seq = last or 0

    def _fenced(self, w: Writer) -> Job:
        job = get_job(w, self.run_id, self.job_name)
        if job.lease_token != self.token:
            raise StaleLease(
                f"job {self.job_name} of run {self.run_id} was leased again "
                f"(token {job.lease_token}, this runner holds {self.token})"
            )
        return job

    def _step(self, job: Job, position: int) -> Step:
        return job.steps[position]

    async def step_started(self, position: int, attempt: int) -> None:
        with self.store.write() as w:
            step = self._step(self._fenced(w), position)
            if attempt == 1:
                check_transition(f"step {step.name}", StepStatus(step.status), StepStatus.RUNNING)
                step.status = StepStatus.RUNNING
                step.started_at = utcnow()
            step.attempts = attempt
            w.emit(
                "step.started",
                service=self.service,
                run_id=self.run_id,
                job_id=self.job_id,
                job=self.job_name,
                step=step.name,
                position=position,
                attempt=attempt,
            )

    async def step_process(self, position: int, pid: int) -> None:
        # Not an event: the pid only serves recovery, which kills what a dead driver left behind.
        with self.store.write() as w:
            self._step(self._fenced(w), position).pid = pid

    async def log(self, position: int | None, lines: LogBatch) -> None:
        if not lines:
            return
        first = self._seq + 1
        rows = [
            {
                "job_id": self.job_id,
                "step_position": position,
                "seq": first + i,
                "ts": ts,
                "text": t,
            }
            for i, (ts, t) in enumerate(lines)
        ]
        with self.store.write() as w:
            self._fenced(w)
            w.session.execute(insert(LogLine), rows)
            w.emit(
                "log.appended",
                service=self.service,
                run_id=self.run_id,
                job_id=self.job_id,
                job=self.job_name,
                position=position,
                first_seq=first,
                last_seq=first + len(rows) - 1,
            )
        self._seq += len(rows)

    async def step_finished(
        self,
        position: int,
        status: StepStatus,
        exit_code: int | None,
        reason: str | None,
        attempts: int,
    ) -> None:
        with self.store.write() as w:
            step = self._step(self._fenced(w), position)
            current = StepStatus(step.status)
            if current is StepStatus.PENDING and status is StepStatus.SKIPPED:
                step.status = status
            else:
                check_transition(f"step {step.name}", current, status)
                step.status = status
                step.finished_at = utcnow()
            step.exit_code = exit_code
            step.reason = reason
            step.attempts = attempts
            data: dict[str, object] = {"status": status.value, "attempts": attempts}
            if exit_code is not None:
                data["exit_code"] = exit_code
            if reason:
                data["reason"] = reason
            if step.started_at and step.finished_at:
                data["duration"] = round((step.finished_at - step.started_at).total_seconds(), 3)
            w.emit(
                "step.finished",
                service=self.service,
                run_id=self.run_id,
                job_id=self.job_id,
                job=self.job_name,
                step=step.name,
                position=position,
                **data,
            )

    async def artifacts(self, files: Sequence[ArtifactFile]) -> None:
        with self.store.write() as w:
            self._fenced(w)
            now = utcnow()
            for f in files:
                w.session.add(
                    Artifact(
                        run_id=self.run_id,
                        job_id=self.job_id,
                        path=f.path,
                        digest=f.digest,
                        size=f.size,
                        created_at=now,
                    )
                )
                w.emit(
                    "artifact.packaged",
                    service=self.service,
                    run_id=self.run_id,
                    job_id=self.job_id,
                    job=self.job_name,
                    path=f.path,
                    digest=f.digest,
                    size=f.size,
                )

    async def job_finished(self, status: JobStatus, reason: str | None) -> None:
        with self.store.write() as w:
            job = self._fenced(w)
            set_job_status(w, get_run(w, self.run_id), job, status, reason)
