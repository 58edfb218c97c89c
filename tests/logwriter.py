"""Logs written as runners write them: a run driven by the test (its jobs leased like a
runner's), lines recorded through JobRecorder (the one path every runner's reports take), so
they land in log_lines with their real ids, seqs, steps and attempts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from conveyor.engine.job_reports import JobRecorder
from conveyor.engine.runs import apply_turn, create_run, finish_run, job_refs, start_run
from conveyor.engine.scheduler import Decision
from conveyor.plan import JobPlan, StepPlan
from conveyor.states import JobStatus, RunStatus
from conveyor.store.db import Store

# Far above any log written here: nothing is removed to make room.
CEILING = 2**40


class LoggedRun:
    """A run whose jobs are leased to this test; `write` records lines as their runner would."""

    def __init__(self, store: Store, jobs: Sequence[str], service: str = "shop") -> None:
        self.store = store
        self.id = create_run(
            store,
            service=service,
            repository=f"/srv/{service}.git",
            sha="a" * 40,
            ref="refs/heads/main",
            trigger="manual",
            commit={},
            pipeline={"service": service},
            jobs=[JobPlan(name=j, steps=[StepPlan(name=j, run="true")]) for j in jobs],
            owner="test-driver",
        )
        self.refs = job_refs(store, self.id)
        start_run(store, self.id, owner="test-driver")
        self.recorders: dict[str, JobRecorder] = {}
        for job in jobs:
            self.lease_again(job)

    def lease_again(self, job: str) -> None:
        """The job's next attempt (the first, on creation): its lines carry a new attempt."""
        token = apply_turn(self.store, self.refs, [Decision(job, JobStatus.QUEUED)], [job])[job]
        self.recorders[job] = JobRecorder(self.store, self.refs[job], token, log_ceiling=CEILING)

    def write(self, job: str, texts: Sequence[str], step: int = 0) -> None:
        now = dt.datetime.now(dt.UTC)
        with self.store.write() as w:
            self.recorders[job].log(w, step, [(now, text) for text in texts])

    def finish(self) -> None:
        finish_run(self.store, self.id, RunStatus.FAILED, "ended by the test")
