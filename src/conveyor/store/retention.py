"""Bounded storage: the server-wide ceiling on stored logs, and retention of logs, artifacts
and release bundles (issue 13, docs/decisions/0016-bounded-storage.md).

Every stored log line is counted in bytes (UTF-8) twice: on its job (``jobs.log_bytes``) and
in the one ``store_usage`` row "logs". A batch of lines is admitted by one conditional UPDATE
of that row, so the ceiling holds across servers on one database. When a batch does not fit,
the logs of the oldest finished runs are removed first; if that frees too little, the batch is
dropped and the job gets one marker line saying so (and the job goes on).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from sqlalchemy import ColumnElement, delete, exists, func, insert, select, update

from conveyor.sandbox import format_bytes
from conveyor.settings import Settings
from conveyor.states import RUN_TERMINAL
from conveyor.store.db import Store, Writer, db_now
from conveyor.store.models import Job, LogLine, Run, StoreUsage

log = logging.getLogger("conveyor.retention")

LOGS = "logs"
LOG_STORE_VARIABLE = "CONVEYOR_LOG_STORE_LIMIT"
LOG_RETENTION_VARIABLE = "CONVEYOR_LOG_RETENTION"
ARTIFACT_RETENTION_VARIABLE = "CONVEYOR_ARTIFACT_RETENTION"
# Settings.log_store_limit when unset.
LOG_STORE_DEFAULT = Settings().log_store_limit
# Pruning under pressure frees this share of the ceiling beyond the batch, so that a busy store
# does not prune one run per batch.
HEADROOM = 0.1
# How often the server applies the retention settings.
PRUNE_SECONDS = 3600.0
FINISHED = [s.value for s in RUN_TERMINAL]


def text_bytes(text: str) -> int:
    """The bytes of a line as stored (UTF-8)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


# --- the ceiling -------------------------------------------------------------------------------


def _usage_row(w: Writer) -> None:
    """Make the "logs" row if it is missing (a store made without the migrations)."""
    if w.session.scalar(select(StoreUsage.bytes).where(StoreUsage.name == LOGS)) is None:
        total = w.session.scalar(select(func.coalesce(func.sum(Job.log_bytes), 0)))
        w.session.execute(insert(StoreUsage), [{"name": LOGS, "bytes": int(total or 0)}])


def stored_log_bytes(w: Writer) -> int:
    _usage_row(w)
    return int(w.session.scalar(select(StoreUsage.bytes).where(StoreUsage.name == LOGS)) or 0)


def _reserve(w: Writer, size: int, ceiling: int) -> bool:
    result = w.session.execute(
        update(StoreUsage)
        .where(StoreUsage.name == LOGS, StoreUsage.bytes + size <= ceiling)
        .values(bytes=StoreUsage.bytes + size),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def charge(w: Writer, job_id: int, size: int) -> None:
    """Count ``size`` bytes of lines stored for ``job_id``, ceiling or not (a marker line)."""
    _usage_row(w)
    w.session.execute(
        update(StoreUsage).where(StoreUsage.name == LOGS).values(bytes=StoreUsage.bytes + size),
        execution_options={"synchronize_session": False},
    )
    _charge_job(w, job_id, size)


def _charge_job(w: Writer, job_id: int, size: int) -> None:
    w.session.execute(
        update(Job).where(Job.id == job_id).values(log_bytes=Job.log_bytes + size),
        execution_options={"synchronize_session": False},
    )


def admit(w: Writer, job_id: int, run_id: int, size: int, ceiling: int) -> bool:
    """Count ``size`` more bytes of log for ``job_id`` if they fit under ``ceiling``, removing
    the logs of the oldest finished runs (never ``run_id``'s) to make room. False: they do not
    fit, and nothing was counted."""
    if _reserve(w, size, ceiling):
        _charge_job(w, job_id, size)
        return True
    used = stored_log_bytes(w)
    goal = max(0, ceiling - size - int(ceiling * HEADROOM))
    if used > goal:
        prune_oldest(w, used - goal, keep_run=run_id)
    if _reserve(w, size, ceiling):
        _charge_job(w, job_id, size)
        return True
    return False


def dropped_marker(w: Writer, job_id: int, attempt: int, ceiling: int) -> str | None:
    """The one line saying this attempt's log is being dropped; None once it was written."""
    result = w.session.execute(
        update(Job).where(Job.id == job_id, Job.log_dropped != attempt).values(log_dropped=attempt),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return (
        f"[conveyor] log stopped here: the server's log store is full "
        f"({LOG_STORE_VARIABLE}={format_bytes(ceiling)}, with no finished run's log left to "
        "remove); the job goes on, the rest of this attempt's output is discarded"
    )


# --- removing logs -----------------------------------------------------------------------------


def prune_run_logs(w: Writer, run_ids: Sequence[int], why: str) -> int:
    """Remove the log lines of ``run_ids``, leaving each job one line that says why; returns
    the bytes freed (net of those lines)."""
    if not run_ids:
        return 0
    jobs = w.session.execute(
        select(Job.id, Job.log_bytes).where(Job.run_id.in_(list(run_ids)), Job.log_bytes > 0)
    ).all()
    if not jobs:
        return 0
    ids = [j for j, _ in jobs]
    last = dict(
        w.session.execute(
            select(LogLine.job_id, func.max(LogLine.seq))
            .where(LogLine.job_id.in_(ids))
            .group_by(LogLine.job_id)
        ).all()
    )
    w.session.execute(
        delete(LogLine).where(LogLine.job_id.in_(ids)),
        execution_options={"synchronize_session": False},
    )
    now = db_now(w.session)
    note = f"[conveyor] this job's log was removed on {now:%Y-%m-%d %H:%M} UTC: {why}"
    size = text_bytes(note)
    w.session.execute(
        insert(LogLine),
        [
            {"job_id": j, "seq": int(last.get(j) or 0) + 1, "ts": now, "text": note, "attempt": 0}
            for j in ids
        ],
    )
    w.session.execute(
        update(Job).where(Job.id.in_(ids)).values(log_bytes=size),
        execution_options={"synchronize_session": False},
    )
    freed = sum(int(b) for _, b in jobs) - size * len(ids)
    w.session.execute(
        update(StoreUsage).where(StoreUsage.name == LOGS).values(bytes=StoreUsage.bytes - freed),
        execution_options={"synchronize_session": False},
    )
    return freed


def _has_log() -> ColumnElement[bool]:
    """The run still has lines its jobs wrote (not only the notes of a removal, attempt 0)."""
    return exists(
        select(LogLine.id)
        .join(Job, Job.id == LogLine.job_id)
        .where(Job.run_id == Run.id, LogLine.attempt > 0)
    )


def prune_oldest(w: Writer, need: int, keep_run: int | None = None) -> int:
    """Remove the logs of the oldest finished runs until ``need`` bytes are freed (or none is
    left); returns the bytes freed."""
    freed = 0
    while freed < need:
        query = (
            select(Run.id).where(Run.status.in_(FINISHED), _has_log()).order_by(Run.id).limit(20)
        )
        if keep_run is not None:
            query = query.where(Run.id != keep_run)
        runs = list(w.session.scalars(query))
        if not runs:
            break
        for run_id in runs:
            gained = prune_run_logs(w, [run_id], f"the log store reached {LOG_STORE_VARIABLE}")
            freed += gained
            log.warning(
                "removed the logs of run %d (%s) to keep under the log store's ceiling",
                run_id,
                format_bytes(max(gained, 0)),
            )
            if freed >= need:
                break
    return freed


# --- retention ---------------------------------------------------------------------------------


def prune_old_logs(store: Store, days: float, batch: int = 50) -> tuple[list[int], int]:
    """Remove the logs of runs that finished more than ``days`` ago."""
    runs: list[int] = []
    freed = 0
    while True:
        with store.write() as w:
            cutoff = db_now(w.session) - dt.timedelta(days=days)
            ids = list(
                w.session.scalars(
                    select(Run.id)
                    .where(Run.status.in_(FINISHED), Run.finished_at < cutoff, _has_log())
                    .order_by(Run.id)
                    .limit(batch)
                )
            )
            if not ids:
                return runs, freed
            freed += prune_run_logs(w, ids, f"older than {LOG_RETENTION_VARIABLE}")
            runs += ids
