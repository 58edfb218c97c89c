"""The server's built-in runner: leases jobs from the store, like a remote agent would, and
executes them in this process."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket

from sqlalchemy.exc import OperationalError

from conveyor.aio import wake_loop
from conveyor.engine.dispatch import DEFAULT_LEASE_SECONDS, Lease, lease_next
from conveyor.engine.job_reports import JobRecorder, StoreReporter
from conveyor.plan import JobPlan
from conveyor.runner.executor import JobExecutor, RunnerSettings
from conveyor.store.db import Store
from conveyor.store.retention import LOG_STORE_DEFAULT
from conveyor.store.vault import for_job

log = logging.getLogger("conveyor.runner")

# Without a wake-up from this process, look for work this often (other servers may queue it).
IDLE_POLL_SECONDS = 0.5


class RunnerPool:
    def __init__(
        self,
        store: Store,
        settings: RunnerSettings,
        *,
        slots: int,
        labels: list[str] | None = None,
        name: str | None = None,
        wake: asyncio.Event | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        log_ceiling: int = LOG_STORE_DEFAULT,
    ) -> None:
        self.store = store
        self.settings = settings
        # CONVEYOR_LEASE_SECONDS and CONVEYOR_LOG_STORE_LIMIT, as the server read them.
        self.lease_seconds = lease_seconds
        self.log_ceiling = log_ceiling
        self.slots = max(1, slots)
        self.name = name or f"builtin@{socket.gethostname()}:{os.getpid()}"
        self.labels = labels if labels is not None else ["local", socket.gethostname()]
        # Set when jobs may be waiting: by the server's hub, and when one of ours finishes.
        self.wake = wake or asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._store_failing = False

    async def serve(self) -> None:
        try:
            await wake_loop(self._fill, self.wake, IDLE_POLL_SECONDS)
        finally:
            for task in list(self._running):
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def _fill(self) -> None:
        """Lease jobs while a slot is free."""
        while len(self._running) < self.slots:
            lease = self._lease()
            if lease is None:
                break
            task = asyncio.create_task(self._execute(lease))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _lease(self) -> Lease | None:
        """The next job for this runner; None also while the store cannot be written (a full
        disk): the runner takes work again once it can, without a restart."""
        try:
            lease = lease_next(self.store, self.name, self.labels, self.lease_seconds)
        except OperationalError as exc:
            if not self._store_failing:
                log.warning("the runner takes no job: the store cannot be written: %s", exc.orig)
            self._store_failing = True
            return None
        if self._store_failing:
            log.warning("the runner takes jobs again: the store can be written")
            self._store_failing = False
        return lease

    async def _execute(self, lease: Lease) -> None:
        try:
            reporter = StoreReporter(
                JobRecorder(
                    self.store, lease.ref, lease.token, self.lease_seconds, self.log_ceiling
                )
            )
            plan = JobPlan.model_validate(lease.ref.plan)
            # Each job gets only what its own env references, looked up for its own service.
            secrets = await asyncio.to_thread(for_job, self.store, lease.context.service, plan)
            settings = dataclasses.replace(self.settings, secrets=secrets)
            await JobExecutor(
                plan, lease.context, reporter, settings, asyncio.Event(), attempt=lease.token
            ).execute()
        except Exception:
            log.exception("job %s of run %s failed in the runner", lease.ref.name, lease.ref.run_id)
        finally:
            self.wake.set()
