"""The built-in runner: executes leased jobs inside this process."""

from __future__ import annotations

import asyncio
import dataclasses

from conveyor.engine.job_reports import JobRecorder, StoreReporter
from conveyor.engine.runs import JobRef, run_context
from conveyor.plan import JobPlan, RunContext
from conveyor.runner.executor import JobExecutor, RunnerSettings
from conveyor.states import JobStatus
from conveyor.store.db import Store
from conveyor.store.models import Run
from conveyor.store.vault import for_job


class LocalRunner:
    def __init__(self, store: Store, settings: RunnerSettings) -> None:
        self.store = store
        self.settings = settings

        self._contexts: dict[int, RunContext] = {}

    def _load(self, ref: JobRef) -> tuple[JobPlan, RunContext]:
        context = self._contexts.get(ref.run_id)
        if context is None:
            with self.store.session() as session:
                run = session.get_one(Run, ref.run_id)
                context = run_context(run)
                self._contexts[ref.run_id] = context
        return JobPlan.model_validate(ref.plan), context

    async def launch(self, ref: JobRef, token: int, cancel: asyncio.Event) -> JobStatus:
        plan, context = self._load(ref)
        reporter = StoreReporter(JobRecorder(self.store, ref, token))
        # Each job gets only what its own env references, looked up for its own service.
        secrets = await asyncio.to_thread(for_job, self.store, context.service, plan)
        settings = dataclasses.replace(self.settings, secrets=secrets)
        return await JobExecutor(plan, context, reporter, settings, cancel, attempt=token).execute()
