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

from conveyor.engine.runs import job_refs_of, move_job
from conveyor.events import EventType
from conveyor.proc import kill_process_group, process_start_time, processes_marked
from conveyor.states import JobStatus, RunStatus, check_transition
from conveyor.store.db import Store, db_now
from conveyor.store.models import Run
from conveyor.store.owners import owned_unfinished_runs

STALE_AFTER = dt.timedelta(seconds=30)


def owner_alive(owner: str | None, heartbeat_at: dt.datetime | None, now: dt.datetime) -> bool:
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        actual = process_start_time(int(pid_text))
        # Same pid but another start time: the pid was reused by an unrelated process.
        return actual is not None and (started in ("", "?") or actual == started)
    return heartbeat_at is not None and now - heartbeat_at < STALE_AFTER


def recover_interrupted(store: Store) -> list[int]:
    """Mark runs with a dead driver as interrupted; returns their ids."""
    with store.session() as session:
        # The database's clock, the one heartbeats are written with (conveyor.store.db.db_now).
        now = db_now(session)
        candidates = owned_unfinished_runs(session)
    dead = [rid for rid, owner, beat in candidates if not owner_alive(owner, beat, now)]
    recovered: list[int] = []
    for run_id in dead:
        with store.write() as w:
            run = w.session.get_one(Run, run_id, with_for_update=True)
            if RunStatus(run.status).terminal or owner_alive(run.owner, run.heartbeat_at, now):
                continue
            if (run.owner or "").split(":", 1)[0] == socket.gethostname():
                _stop_processes(run_id)
            refs = {ref.id: ref for ref in job_refs_of(run)}
            for job in run.jobs:
                if not JobStatus(job.status).terminal:
                    move_job(w, refs[job.id], JobStatus.INTERRUPTED, "its driver stopped")
            check_transition("run", RunStatus(run.status), RunStatus.INTERRUPTED)
            run.status = RunStatus.INTERRUPTED
            run.reason = f"the process running it ({run.owner or 'unknown'}) stopped"
            run.finished_at = now
            w.emit(
                EventType.PIPELINERUN_FINISHED,
                service=run.service.name,
                run_id=run_id,
                status=RunStatus.INTERRUPTED.value,
                reason=run.reason,
            )
            recovered.append(run_id)
    return recovered


def _stop_processes(run_id: int) -> None:
    own_group = os.getpgid(0)
    # Processes started by this run's steps carry its CONVEYOR_RUN_ID in their environment,
    # which (unlike a stored pid) cannot point at an unrelated, reused pid.
    for pid in processes_marked(f"CONVEYOR_RUN_ID={run_id}".encode()):
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group != own_group:
            kill_process_group(group, signal.SIGKILL)
