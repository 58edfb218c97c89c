"""The server's background services, run by one supervisor.

A service is a coroutine that serves until it is cancelled: the intake, the dispatcher, polling,
retention, delivery, the outbox, CDEvents, the built-in runner. The supervisor starts them all,
restarts one that ends or fails on its own (after a pause that doubles up to a ceiling, saying
so once per failure, never in a loop of tracebacks), and stops them all within a bound when the
server stops. `periodic` makes a service of a step that runs whenever woken or every so often.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from conveyor.aio import wake_loop

__all__ = ["Service", "Supervisor", "periodic"]

log = logging.getLogger("conveyor.server")

# A service that ended on its own is started again after this long, doubling up to the ceiling.
RESTART_SECONDS = (1.0, 30.0)
# How long stopping may take: every service is cancelled, then waited for this long at most.
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class Service:
    """A named background service: ``serve()`` runs until cancelled."""

    name: str
    serve: Callable[[], Awaitable[object]]


def periodic(
    name: str,
    step: Callable[[], object],
    *,
    wake: asyncio.Event | None = None,
    every: float,
    in_thread: bool = False,
) -> Service:
    """A service that runs ``step`` whenever ``wake`` is set, or every ``every`` seconds. A
    failing step is logged (the store's failures in one line) and tried again at the next turn;
    a step that may wait on git or the network runs in a thread, off the event loop."""
    event = wake if wake is not None else asyncio.Event()

    async def once() -> None:
        try:
            if in_thread:
                await asyncio.to_thread(step)
            else:
                step()
        except OperationalError as exc:
            # A full disk or a lost database: one line each time, not a traceback a second.
            log.error("%s failed: the store: %s; trying again", name, exc.orig)
        except Exception:
            log.exception("%s failed; trying again", name)

    async def serve() -> None:
        await wake_loop(once, event, every)

    return Service(name, serve)


class Supervisor:
    """Runs services as tasks and keeps them running until `stop`."""

    def __init__(self, restart: tuple[float, float] = RESTART_SECONDS) -> None:
        self._restart = restart
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    def start(self, service: Service) -> None:
        if service.name in self._tasks:
            raise ValueError(f"a service named {service.name!r} runs already")
        self._tasks[service.name] = asyncio.create_task(self._keep(service), name=service.name)

    async def _keep(self, service: Service) -> None:
        pause, ceiling = self._restart
        while True:
            try:
                await service.serve()
                log.error("%s stopped on its own; starting it again in %g s", service.name, pause)
            except Exception:
                log.exception("%s failed; starting it again in %g s", service.name, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, ceiling)

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Cancel every service and wait for them, ``timeout`` seconds at most."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.warning("%s did not stop within %g s", task.get_name(), timeout)
        for task in tasks:
            if task.done() and not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()
