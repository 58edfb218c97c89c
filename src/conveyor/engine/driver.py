"""Drive one run to its end: apply the scheduler's decisions, hand ready jobs to a runner,
heartbeat, and honour cancellation from this process (Ctrl-C) or another (`conveyor cancel`)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from conveyor.engine import runs
from conveyor.engine.dispatch import DEFAULT_LEASE_SECONDS
from conveyor.engine.scheduler import Decision, JobView, decide, run_outcome
from conveyor.proc import process_start_time
from conveyor.states import JobStatus, RunStatus
from conveyor.store.db import Store

HEARTBEAT_SECONDS = 0.5

# (job, fencing token, cancel event) -> the job's final status
Launcher = Callable[[runs.JobRef, int, asyncio.Event], Coroutine[Any, Any, JobStatus]]


def process_owner() -> str:
    """Identifies this process for recovery: host, pid, and the process start time."""
    started = process_start_time(os.getpid()) or "?"
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


class RunDriver:
    def __init__(
        self,
        store: Store,
        run_id: int,
        launch: Launcher,
        parallelism: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.launch = launch
        self.parallelism = max(1, parallelism)
        # CONVEYOR_LEASE_SECONDS (Settings), as the server's runner protocol uses.
        self.lease_seconds = lease_seconds
        self.cancel = asyncio.Event()
        self._cancel_applied = False

    def _decide(self, views: dict[str, JobView]) -> list[Decision]:
        cancel = self.cancel.is_set() and not self._cancel_applied
        self._cancel_applied = self._cancel_applied or cancel
        return decide(views, cancel)

    def request_cancel(self) -> None:
        """Cancel from inside this process (e.g. Ctrl-C); recorded like `conveyor cancel`."""
        if not self.cancel.is_set():
            runs.request_cancel(self.store, self.run_id, by="interrupt")
            self.cancel.set()

    async def drive(self) -> RunStatus:
        runs.start_run(self.store, self.run_id, process_owner())
        refs = runs.job_refs(self.store, self.run_id)
        running: dict[asyncio.Task[JobStatus], str] = {}
        beat = asyncio.get_running_loop().time()
        try:
            while True:
                views = runs.job_views(self.store, refs)
                decisions = self._decide(views)
                free = self.parallelism - len(running)
                lease = (
                    []
                    if self.cancel.is_set()
                    else [n for n, v in views.items() if v.status is JobStatus.QUEUED][
                        : max(0, free)
                    ]
                )
                if decisions or lease:
                    # One transaction for the turn: what the scheduler decided, and the leases.
                    tokens = runs.apply_turn(
                        self.store, refs, decisions, lease, lease_seconds=self.lease_seconds
                    )
                    for name, token in tokens.items():
                        task = asyncio.create_task(self.launch(refs[name], token, self.cancel))
                        running[task] = name
                        views[name] = replace(views[name], status=JobStatus.RUNNING)
                if not running and all(v.status.terminal for v in views.values()):
                    status, reason = run_outcome(views, self.cancel.is_set())
                    runs.finish_run(self.store, self.run_id, status, reason)
                    return status
                if not running:
                    raise RuntimeError(f"run {self.run_id} is stuck: {views}")
                now = asyncio.get_running_loop().time()
                timeout = max(0.0, beat + HEARTBEAT_SECONDS - now)
                done, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    running.pop(task)
                    task.result()
                if asyncio.get_running_loop().time() >= beat + HEARTBEAT_SECONDS:
                    beat = asyncio.get_running_loop().time()
                    if runs.heartbeat(self.store, self.run_id) and not self.cancel.is_set():
                        self.cancel.set()
        finally:
            for task in running:
                task.cancel()
