"""What a runner's reports (conveyor.reports) do to the store.

The built-in runner writes straight to the store through :class:`StoreReporter`; a remote agent
sends the same reports over HTTP and the server applies them with :meth:`JobRecorder.apply`. Every
report carries the job's fencing token, so a runner whose lease was taken away cannot change a
job that now belongs to someone else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, exists, insert, select, update
from sqlalchemy.exc import OperationalError

from conveyor.engine.dispatch import DEFAULT_LEASE_SECONDS
from conveyor.engine.runs import JobRef, move_job
from conveyor.errors import StaleLease
from conveyor.events import EventType
from conveyor.reports import ArtifactFile, LogBatch, StepOutcome
from conveyor.states import IllegalTransition, JobStatus, StepStatus, allowed
from conveyor.store import retention
from conveyor.store.db import Store, Writer, db_now
from conveyor.store.models import Artifact, Job, LogLine, Run, Step, utcnow
from conveyor.store.retention import LOG_STORE_DEFAULT, text_bytes

log = logging.getLogger("conveyor.runner")


T = TypeVar("T")
# A report the store could not take is tried again after this many seconds, doubling up to
# the second figure.
STORE_RETRY_SECONDS = (0.1, 2.0)


class JobRecorder:
    """The effects of each report on the store, inside a transaction the caller owns."""

    def __init__(
        self,
        store: Store,
        ref: JobRef,
        token: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        log_ceiling: int = LOG_STORE_DEFAULT,
    ) -> None:
        self.store = store
        self.ref = ref
        self.token = token
        self.lease_seconds = lease_seconds
        with store.session() as session:
            rows = session.execute(
                select(Step.position, Step.id, Step.name, Step.started_at).where(
                    Step.job_id == ref.id
                )
            )
            self._steps = {pos: (sid, name) for pos, sid, name, _ in rows}
        # The log's last line number, read in the first transaction that writes lines: a job
        # leased again (its first runner was lost) continues its numbering, and the server
        # makes a recorder per report batch of a remote runner.
        self._seq: int | None = None
        self._started: dict[int, dt.datetime] = {}
        # CONVEYOR_LOG_STORE_LIMIT (Settings.log_store_limit).
        self.log_ceiling = log_ceiling
        self._dropped = False

    def _fill(self, w: Writer, lines: LogBatch) -> list[tuple[dt.datetime, str]]:
        """The lines of a batch that still fit under the store's ceiling, then the marker
        that stops this attempt's log (counted beyond the ceiling: one line)."""
        room = self.log_ceiling - retention.stored_log_bytes(w)
        kept: list[tuple[dt.datetime, str]] = []
        size = 0
        for ts, text in lines:
            if size + text_bytes(text) > room:
                break
            kept.append((ts, text))
            size += text_bytes(text)
        if not kept or not retention.admit(w, self.ref.id, self.ref.run_id, size, self.log_ceiling):
            kept = []
        self._dropped = True
        marker = retention.dropped_marker(w, self.ref.id, self.token, self.log_ceiling)
        if marker is not None:
            kept.append((utcnow(), marker))
            retention.charge(w, self.ref.id, text_bytes(marker))
        return kept

    def _dropping(self, w: Writer) -> bool:
        """Whether the store's ceiling already stopped this attempt's log (its marker is the
        last line: nothing after it, even a batch small enough to fit)."""
        if not self._dropped:
            dropped = w.session.scalar(select(Job.log_dropped).where(Job.id == self.ref.id))
            self._dropped = dropped == self.token
        return self._dropped

    def _lease_held(self) -> ColumnElement[bool]:
        return exists().where(
            Job.id == self.ref.id,
            Job.lease_token == self.token,
            Job.status == JobStatus.RUNNING,
        )

    def check_lease(self, w: Writer) -> None:
        """Raise StaleLease unless this runner still holds the job: same token, still running.

        The status matters as much as the token: a job whose lease expired goes back to the
        queue with its token unchanged until someone leases it again, and the runner that lost
        it must hear "not yours" (409), not an illegal step transition (once a 500, retried
        forever by the agent)."""
        row = w.session.execute(
            select(Job.lease_token, Job.status).where(Job.id == self.ref.id)
        ).one()
        if row.lease_token != self.token:
            raise StaleLease(
                f"job {self.ref.name} of run {self.ref.run_id} was leased again "
                f"(token {row.lease_token}, this runner holds {self.token})"
            )
        if JobStatus(row.status) is not JobStatus.RUNNING:
            raise StaleLease(
                f"job {self.ref.name} of run {self.ref.run_id} is {row.status} now: "
                f"the lease this runner held (token {self.token}) has ended"
            )

    def _move_step(self, w: Writer, position: int, status: StepStatus, **values: Any) -> None:
        """One UPDATE checks the lease and the state machine and makes the change."""
        step_id, name = self._steps[position]
        sources = [s.value for s in StepStatus if allowed(s, status)]
        result = w.session.execute(
            update(Step)
            .where(Step.id == step_id, Step.status.in_(sources), self._lease_held())
            .values(status=status, **values),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self.check_lease(w)
            current = w.session.scalars(select(Step.status).where(Step.id == step_id)).one()
            raise IllegalTransition(f"step {name}", StepStatus(current), status)

    def _emit(self, w: Writer, type_: EventType, **data: Any) -> None:
        w.emit(
            type_,
            service=self.ref.service,
            run_id=self.ref.run_id,
            job_id=self.ref.id,
            job=self.ref.name,
            **data,
        )

    def step_started(self, w: Writer, position: int, attempt: int) -> None:
        step_id, name = self._steps[position]
        if attempt == 1:
            self._started[position] = utcnow()
            self._move_step(
                w, position, StepStatus.RUNNING, started_at=self._started[position], attempts=1
            )
        else:
            self.check_lease(w)
            w.session.execute(
                update(Step).where(Step.id == step_id).values(attempts=attempt),
                execution_options={"synchronize_session": False},
            )
        self._emit(w, EventType.STEP_STARTED, step=name, position=position, attempt=attempt)

    def log(self, w: Writer, position: int | None, lines: LogBatch) -> None:
        """Store a batch of lines as this attempt's (the lease token is the job's attempt),
        if the store's log ceiling lets it: otherwise the batch is dropped and the attempt
        gets one line saying so, once (conveyor.store.retention)."""
        if not lines:
            return
        self.check_lease(w)
        if self._dropping(w):
            return
        size = sum(text_bytes(text) for _, text in lines)
        if not retention.admit(w, self.ref.id, self.ref.run_id, size, self.log_ceiling):
            lines = self._fill(w, lines)
            if not lines:
                return
        if self._seq is None:
            last = w.session.scalar(
                select(LogLine.seq)
                .where(LogLine.job_id == self.ref.id)
                .order_by(LogLine.seq.desc())
                .limit(1)
            )
            self._seq = last or 0
        first = self._seq + 1
        rows = [
            {
                "job_id": self.ref.id,
                "step_position": position,
                "seq": first + i,
                "ts": ts,
                "text": text,
                "attempt": self.token,
            }
            for i, (ts, text) in enumerate(lines)
        ]
        w.session.execute(insert(LogLine), rows)
        self._emit(
            w,
            EventType.LOG_APPENDED,
            position=position,
            first_seq=first,
            last_seq=first + len(rows) - 1,
        )
        self._seq += len(rows)

    def step_finished(self, w: Writer, position: int, outcome: StepOutcome) -> None:
        step_id, name = self._steps[position]
        now = utcnow()
        status = outcome.status
        values: dict[str, Any] = {
            "exit_code": outcome.exit_code,
            "reason": outcome.reason,
            "attempts": outcome.attempts,
        }
        if status is not StepStatus.SKIPPED:
            values["finished_at"] = now
        self._move_step(w, position, status, **values)
        data: dict[str, Any] = {"status": status.value, "attempts": outcome.attempts}
        if outcome.exit_code is not None:
            data["exit_code"] = outcome.exit_code
        if outcome.reason:
            data["reason"] = outcome.reason
        started = self._started.get(position)
        if started is None and status is not StepStatus.SKIPPED:
            started = w.session.scalar(select(Step.started_at).where(Step.id == step_id))
        if started is not None:
            data["duration"] = round((now - started).total_seconds(), 3)
        self._emit(w, EventType.STEP_FINISHED, step=name, position=position, **data)

    def artifacts(self, w: Writer, files: Sequence[ArtifactFile]) -> None:
        self.check_lease(w)
        now = utcnow()
        for f in files:
            w.session.add(
                Artifact(
                    run_id=self.ref.run_id,
                    job_id=self.ref.id,
                    path=f.path,
                    digest=f.digest,
                    size=f.size,
                    created_at=now,
                )
            )
            self._emit(w, EventType.ARTIFACT_PACKAGED, path=f.path, digest=f.digest, size=f.size)

    def job_finished(self, w: Writer, status: JobStatus, reason: str | None) -> None:
        move_job(w, self.ref, status, reason, token=self.token)

    def heartbeat(self, w: Writer) -> bool:
        """Extend the lease (if still held); returns whether the run was asked to cancel."""
        return extend_lease(w, self.ref, self.token, self.lease_seconds)

    def apply(self, w: Writer, report: Mapping[str, Any]) -> bool:
        """Apply one report as a remote runner sends it (see conveyor.server.runners)."""
        kind = report["kind"]
        if kind == "step_started":
            self.step_started(w, int(report["position"]), int(report["attempt"]))
        elif kind == "log":
            lines = [(dt.datetime.fromisoformat(ts), str(text)) for ts, text in report["lines"]]
            self.log(w, report.get("position"), lines)
        elif kind == "step_finished":
            outcome = StepOutcome(
                StepStatus(report["status"]),
                report.get("exit_code"),
                report.get("reason"),
                int(report["attempts"]),
            )
            self.step_finished(w, int(report["position"]), outcome)
        elif kind == "artifacts":
            self.artifacts(
                w,
                [ArtifactFile(f["path"], f["digest"], int(f["size"])) for f in report["files"]],
            )
        elif kind == "job_finished":
            self.job_finished(w, JobStatus(report["status"]), report.get("reason"))
        elif kind == "heartbeat":
            return self.heartbeat(w)
        else:
            raise ValueError(f"unknown report kind {kind!r}")
        return False


def extend_lease(w: Writer, ref: JobRef, token: int, lease_seconds: float) -> bool:
    """Extend a held lease by the database's clock; StaleLease if it is no longer held.
    Returns whether the run was asked to cancel."""
    expires = db_now(w.session) + dt.timedelta(seconds=lease_seconds)
    result = w.session.execute(
        update(Job)
        .where(Job.id == ref.id, Job.lease_token == token, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=expires),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        row = w.session.execute(select(Job.lease_token, Job.status).where(Job.id == ref.id)).one()
        if row.lease_token == token and JobStatus(row.status).terminal:
            return False  # the job ended under this lease: a last heartbeat crossed its end
        raise StaleLease(
            f"job {ref.name} of run {ref.run_id} is {row.status} with lease {row.lease_token}: "
            f"the lease this runner held (token {token}) has ended"
        )
    cancel = w.session.scalar(select(Run.cancel_requested).where(Run.id == ref.run_id))
    return bool(cancel)


class StoreReporter:
    """The built-in runner's reporter: each report is its own transaction.

    When the store cannot be written (a full disk, a lost database), the job goes on: its log
    lines are dropped and counted, and the first batch stored afterwards begins with a line
    saying how many were lost; its state changes are retried until they are stored (or the
    job was given to another runner meanwhile: StaleLease). Persist first: a step's end is
    never reported before it is recorded."""

    def __init__(self, recorder: JobRecorder) -> None:
        self.store = recorder.store
        self.recorder = recorder
        self.lost_lines = 0
        self._lost_at: int | None = None
        self._failing = False

    def _failed(self, exc: OperationalError) -> None:
        if not self._failing:
            self._failing = True
            ref = self.recorder.ref
            log.warning(
                "job %s of run %d: the store cannot be written (%s): its log lines are "
                "dropped and its reports retried until it can",
                ref.name,
                ref.run_id,
                exc.orig,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            ref = self.recorder.ref
            log.warning("job %s of run %d: the store can be written again", ref.name, ref.run_id)

    def _lost(self, w: Writer) -> None:
        """The line that says how many lines the store could not take, once it can (in the
        log of the step that wrote them)."""
        if self.lost_lines:
            text = (
                f"[conveyor] {self.lost_lines} log line(s) were lost here: the store could "
                "not be written (is the data directory full?)"
            )
            self.recorder.log(w, self._lost_at, [(utcnow(), text)])

    async def _write(self, apply: Callable[[Writer], T]) -> T:
        delay = STORE_RETRY_SECONDS[0]
        while True:
            try:
                with self.store.write() as w:
                    self._lost(w)
                    result = apply(w)
            except OperationalError as exc:
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_SECONDS[1])
                continue
            self.lost_lines = 0
            self._recovered()
            return result

    async def step_started(self, position: int, attempt: int) -> None:
        await self._write(lambda w: self.recorder.step_started(w, position, attempt))

    async def log(self, position: int | None, lines: LogBatch) -> None:
        if not lines:
            return
        try:
            with self.store.write() as w:
                self._lost(w)
                self.recorder.log(w, position, lines)
        except OperationalError as exc:
            if not self.lost_lines:
                self._lost_at = position
            self.lost_lines += len(lines)
            self._failed(exc)
            return
        self.lost_lines = 0
        self._recovered()

    async def step_finished(self, position: int, outcome: StepOutcome) -> None:
        await self._write(lambda w: self.recorder.step_finished(w, position, outcome))

    async def artifacts(self, files: Sequence[ArtifactFile]) -> None:
        await self._write(lambda w: self.recorder.artifacts(w, files))

    async def job_finished(self, status: JobStatus, reason: str | None) -> None:
        await self._write(lambda w: self.recorder.job_finished(w, status, reason))

    async def heartbeat(self) -> bool:
        try:
            with self.store.write() as w:
                return self.recorder.heartbeat(w)
        except OperationalError as exc:
            # Not fatal: the next heartbeat may land; if the lease runs out meanwhile, the
            # job is given to a runner again (its next attempt) once the store can be written.
            self._failed(exc)
            return False
