"""Closing runs whose driver died (kill -9, a crash, a reboot).

A run belongs to the process named in its `owner` column. At start-up every command that reads
or writes runs looks for unfinished runs whose owner is gone: on this host, by pid and process
start time; elsewhere, by a heartbeat older than the lease. Such runs end `interrupted`, and
the step processes they left behind on this host are stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
from contextlib import suppress

from sqlalchemy import select

from conveyor.engine.runs import set_job_status
from conveyor.engine.states import JobStatus, RunStatus, StepStatus, check_transition
from conveyor.store.db import Store
from conveyor.store.models import Run, utcnow

STALE_AFTER = dt.timedelta(seconds=30)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(owner: str | None, heartbeat_at: dt.datetime | None, now: dt.datetime) -> bool:
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        actual = _start_time(int(pid_text))
        # Same pid but another start time: the pid was reused by an unrelated process.
        return actual is not None and (started in ("", "?") or actual == started)
    return heartbeat_at is not None and now - heartbeat_at < STALE_AFTER


def _belongs_to(pid: int, run_id: int) -> bool:
    """Only kill a pid that still carries this run's variables (pids are reused)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        return False
    return f"CONVEYOR_RUN_ID={run_id}".encode() in env


def recover_interrupted(store: Store) -> list[int]:
    """Mark runs with a dead driver as interrupted; returns their ids."""
    now = utcnow()
    with store.session() as session:
        candidates = session.execute(
            select(Run.id, Run.owner, Run.heartbeat_at).where(
                Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING])
            )
        ).all()
    dead = [rid for rid, owner, beat in candidates if not owner_alive(owner, beat, now)]
    recovered: list[int] = []
    for run_id in dead:
        with store.write() as w:
            run = w.session.get_one(Run, run_id, with_for_update=True)
            if RunStatus(run.status).terminal or owner_alive(run.owner, run.heartbeat_at, now):
                continue
            local = (run.owner or "").split(":", 1)[0] == socket.gethostname()
            for job in run.jobs:
                for step in job.steps:
                    if step.status == StepStatus.RUNNING and step.pid and local:
                        _stop_group(step.pid, run_id)
                if not JobStatus(job.status).terminal:
                    set_job_status(w, run, job, JobStatus.INTERRUPTED, "its driver stopped")
            check_transition("run", RunStatus(run.status), RunStatus.INTERRUPTED)
            run.status = RunStatus.INTERRUPTED
            run.reason = f"the process running it ({run.owner or 'unknown'}) stopped"
            run.finished_at = now
            w.emit(
                "pipelinerun.finished",
                service=run.service.name,
                run_id=run_id,
                status=RunStatus.INTERRUPTED.value,
                reason=run.reason,
            )
            recovered.append(run_id)
    return recovered


def _stop_group(pid: int, run_id: int) -> None:
    if _belongs_to(pid, run_id):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
