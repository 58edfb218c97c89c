"""Continuous health of what serves (issue 13): between deployments, every environment's
serving release is looked at every `monitor.interval`.

A release whose process is gone is started again at once, then with a doubling backoff. Each
death or failed check is a strike; `monitor.failures` passing checks in a row clear them. At
`failures` strikes a production-tier environment gets an incident and a rollback to the last
verified release (carried out like any rollback, so it survives a crash too); other tiers are
marked unhealthy and people are told. Only the server holding an environment's lease (a row
in the store, engine.monitoring.lease) watches it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from conveyor.checks.base import CheckOptions, Outcome, combine
from conveyor.checks.health import run_health
from conveyor.engine import monitoring
from conveyor.errors import ConveyorError
from conveyor.spec.models import Environment, Health

if TYPE_CHECKING:
    from conveyor.delivery.controller import DeliveryController

log = logging.getLogger("conveyor.delivery.monitor")

# A server that died keeps its environments this long before another may watch them.
LEASE_SECONDS = 15.0
MAX_BACKOFF = 300.0


@dataclasses.dataclass
class _Watch:
    """What this server remembers of one environment's serving deployment."""

    deployment_id: int
    strikes: int = 0
    passes: int = 0
    restarts: int = 0
    acted: bool = False
    next_check: float = 0.0
    next_restart: float = 0.0


def monitor_checks(config: Environment) -> Health | None:
    """The checks of `monitor:`, defaulting to the environment's health checks that suit
    watching, each made one quick look (one success, no longer than an interval). Prometheus
    is left out by default: its windows are minutes long and describe traffic, not the
    process."""
    mon, health = config.monitor, config.health
    if mon.configured():
        return Health.of(**mon.configured())
    if health is None:
        return None
    quick = {
        name: check.for_monitoring(mon.interval)
        for name, check in health.configured().items()
        if isinstance(check, CheckOptions)
    }
    chosen = {name: check for name, check in quick.items() if check is not None}
    return Health.of(**chosen) if chosen else None


class Monitor:
    def __init__(self, controller: DeliveryController, *, tick: float = 0.25) -> None:
        self.controller = controller
        self.tick = tick
        self._watches: dict[int, _Watch] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.round()
                except Exception:  # a bug in one round must not stop the watching
                    log.exception("monitoring round failed")
                await asyncio.sleep(self.tick)  # a polling period, not a synchronisation
        finally:
            await asyncio.to_thread(
                monitoring.release_lease, self.controller.store, self.controller.owner
            )

    async def round(self, *, force: bool = False) -> None:
        """Check every environment this server watches whose interval has passed (all of
        them with ``force``)."""
        store, owner = self.controller.store, self.controller.owner
        watched = await asyncio.to_thread(monitoring.lease, store, owner, LEASE_SECONDS)
        now = time.monotonic()
        due = []
        for item in watched:
            watch = self._watches.get(item.environment_id)
            if watch is None or watch.deployment_id != item.deployment_id:
                watch = self._watches[item.environment_id] = _Watch(item.deployment_id)
            if force or now >= watch.next_check:
                due.append(self.check(item, watch))
        self._watches = {
            k: v for k, v in self._watches.items() if k in {w.environment_id for w in watched}
        }
        await asyncio.gather(*due)

    async def check(self, item: monitoring.Watched, watch: _Watch) -> None:
        controller = self.controller
        job = await asyncio.to_thread(controller._load, item.deployment_id)
        config = job.config.monitor
        watch.next_check = time.monotonic() + config.interval
        if not config.enabled or job.serving is None:
            return
        name = f"{job.service} {job.environment}"

        def line(text: str) -> None:
            log.info("%s: %s", name, text)

        target = controller.target(job, line, strict=False)
        status = await target.status(job.serving)
        if not status.running:
            detail = f"r{job.release_id} is not running ({status.detail or 'gone'})"
            watch.strikes, watch.passes = watch.strikes + 1, 0
            if watch.strikes >= config.failures and job.tier == "production":
                await self._act(item, watch, detail)
                return
            if time.monotonic() >= watch.next_restart:
                try:
                    await controller.restart(job, line)
                    watch.restarts += 1
                    backoff = min(config.interval * 2 ** (watch.restarts - 1), MAX_BACKOFF)
                    watch.next_restart = time.monotonic() + backoff
                    detail += f"; restarted (restart {watch.restarts})"
                except ConveyorError as exc:
                    detail += f"; could not be restarted: {exc.message}"
            log.warning("%s: %s", name, detail)
            await self._record(item, False, detail)
            if watch.strikes >= config.failures:
                await self._act(item, watch, detail)
            return
        checks = monitor_checks(job.config)
        results = []
        if checks is not None:
            results = await run_health(
                checks,
                base_url=target.endpoint(job.serving) or job.serving.url,
                env={**target.ctx.env, "CONVEYOR_DEPLOY_URL": job.serving.url or ""},
                cwd=controller.store.home,
                prometheus_url=controller.prometheus_url,
                sandbox=controller.sandbox,
            )
        outcome = combine(results) if results else Outcome.PASS
        detail = "; ".join(f"{r.kind}: {r.detail}" for r in results) or "running"
        if outcome is Outcome.FAIL:
            watch.strikes, watch.passes = watch.strikes + 1, 0
            await self._record(item, False, detail)
            if watch.strikes >= config.failures:
                await self._act(item, watch, detail)
            return
        watch.passes += 1
        if watch.passes >= config.failures:
            watch.strikes, watch.restarts, watch.acted = 0, 0, False
            watch.next_restart = 0.0
        await self._record(item, True, detail)

    async def _record(self, item: monitoring.Watched, healthy: bool, detail: str) -> None:
        await asyncio.to_thread(
            monitoring.record_health,
            self.controller.store,
            item.environment_id,
            item.deployment_id,
            healthy,
            detail,
        )

    async def _act(self, item: monitoring.Watched, watch: _Watch, detail: str) -> None:
        if watch.acted:
            return
        watch.acted = True
        done = await asyncio.to_thread(
            monitoring.serving_failed,
            self.controller.store,
            item.environment_id,
            item.deployment_id,
            f"{watch.strikes} failed checks: {detail}",
        )
        log.warning("deployment %s kept failing: %s", item.deployment_id, done)
        self.controller.wake.set()
