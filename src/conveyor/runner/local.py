"""The built-in runner: executes leased jobs inside this process."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from conveyor.engine.plan import JobPlan, RunContext
from conveyor.engine.states import JobStatus
from conveyor.runner.executor import JobExecutor, RunnerSettings
from conveyor.runner.reporting import StoreReporter
from conveyor.store.db import Store
from conveyor.store.models import Job, Run


class LocalRunner:
    def __init__(self, store: Store, settings: RunnerSettings) -> None:
        self.store = store
        self.settings = settings

    def _load(self, run_id: int, job_name: str) -> tuple[JobPlan, RunContext]:
        with self.store.session() as session:
            run = session.get_one(Run, run_id)
            job = session.scalars(
                select(Job).where(Job.run_id == run_id, Job.name == job_name)
            ).one()
            context = RunContext(
                run_id=run.id,
                service=run.service.name,
                sha=run.sha,
                ref=run.ref,
                repository=run.service.repository,
            )
            return JobPlan.model_validate(job.config), context

    async def launch(
        self, run_id: int, job_name: str, token: int, cancel: asyncio.Event
    ) -> JobStatus:
        plan, context = self._load(run_id, job_name)
        reporter = StoreReporter(self.store, run_id, job_name, token)
        return await JobExecutor(plan, context, reporter, self.settings, cancel).execute()
