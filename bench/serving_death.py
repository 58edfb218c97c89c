"""A serving release dies → the monitor brings the environment back, on the process target
(target: ≤ monitor interval + 5 s).

The service of bench/delivery_rollback.py is released by the real `conveyor run`; a
DeliveryController runs in this process exactly as inside `conveyor server` (its serve() loop,
its monitor, its proxy on this event loop). Each round kill -9s the process group of the release
that serves (its pid as the store records it), at a moment unrelated to the monitor's rhythm,
and measures, from the kill, the first moment the stable URL answers again as seen by a separate
process that GETs it every POLL seconds on a fresh connection:

- non-production (`tier: staging`): the same release is started again (`environment.restarted`
  in the store, then the stable URL answers it again);
- production (`monitor.failures: 1` by default): the death is the strike that acts, so an
  incident is opened and the environment rolled back to the previous release (its rollback
  deployment succeeded in the store, the stable URL answers the previous release). Each round
  first releases a new version, so there is always a previous one to go back to.

Each non-production round starts once the monitor's passing checks cleared the previous death
(its strikes and restart backoff): a fresh death, not the next of a series (a release that keeps
dying is restarted with a doubling backoff, by design). Detection is up to one
`monitor.interval` by construction (the monitor looks at each serving
release once per interval); the rest is the restart or the rollback itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from delivery_rollback import (
    POLL,
    TERMINAL,
    Poller,
    Records,
    git,
    health,
    make_release,
    pipeline,
    stamp,
    stop_release_processes,
)

ROUNDS = 5
# The system's interpreter: the release runs in the sandbox (a fresh root with /usr), where an
# interpreter under the user's home (pyenv) is not visible.
START = os.environ.get("BENCH_DEATH_START", "/usr/bin/python3 app.py")
INTERVAL = os.environ.get("BENCH_MONITOR_INTERVAL", "2s")
FAILURES = int(os.environ.get("BENCH_MONITOR_FAILURES", "1"))
TARGET_SLACK = 5.0  # seconds on top of the interval


def _seconds(duration: str) -> float:
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration.rstrip("s"))


def _serving_pid(db: Path, environment: str) -> tuple[int, int] | None:
    """(release, pid) serving ``environment`` as the store says."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute(
            "SELECT current_release_id, instance FROM environments WHERE name = ?", (environment,)
        ).fetchone()
    if row is None or not row[1]:
        return None
    pid = json.loads(row[1]).get("pid")
    return (int(row[0]), int(pid)) if pid else None


def _cleared(db: Path, environment: str, since: float) -> bool:
    """The monitor found ``environment`` healthy in a check at or after ``since`` (unix time)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute(
            "SELECT healthy, checked_at FROM environments WHERE name = ?", (environment,)
        ).fetchone()
    checked = stamp(row[1]) if row is not None else None
    return bool(row is not None and row[0] and checked is not None and checked >= since)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _scenario(root: Path, tier: str, rounds: int) -> dict[str, Any]:
    from conveyor.delivery.controller import DeliveryController
    from conveyor.runner.artifacts import ArtifactStore
    from conveyor.store.db import Settings, open_store

    repo, home = root / "repo", root / "home"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    failures = FAILURES if tier == "production" else 3
    conveyor_yml = pipeline(
        f"{tier}:\n  tier: {tier}\n  deploy: {{ target: process, start: '{START}' }}\n"
        f"  {health()}\n  monitor: {{ interval: {INTERVAL}, failures: {failures} }}"
    )
    first = await asyncio.to_thread(make_release, repo, home, "v0", conveyor_yml)
    store = open_store(Settings.resolve(home))
    records = Records(home / "conveyor.db")
    controller = DeliveryController(store, ArtifactStore(home / "artifacts"))
    loop_task = asyncio.create_task(controller.serve())
    poller: Poller | None = None

    async def wait(predicate: Any, what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await asyncio.to_thread(predicate)
            if value:
                return value
            await asyncio.sleep(0.02)
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")

    def settled(release_id: int) -> dict[str, Any] | None:
        deps = records.deployments(release_id=release_id)
        return deps[-1] if deps and all(d["status"] in TERMINAL for d in deps) else None

    per_round: list[dict[str, float]] = []
    try:
        controller.wake.set()
        dep = await wait(lambda: settled(first), "v0")
        if dep["status"] != "succeeded":
            raise RuntimeError(f"v0 ended {dep['status']}: {dep['reason']} {dep['log'][-5:]}")
        url = records.env_url(tier)
        assert url is not None
        poller = Poller(int(url.rsplit(":", 1)[1]), root / "poller.log")
        await poller.until("v0", after=0, timeout=30)
        version = "v0"
        for n in range(1, rounds + 1):
            previous = version
            if tier == "production":
                version = f"v{n}"
                rid = await asyncio.to_thread(make_release, repo, home, version, conveyor_yml)
                controller.wake.set()
                dep = await wait(lambda r=rid: settled(r), version)  # type: ignore[misc]
                if dep["status"] != "succeeded":
                    raise RuntimeError(f"{version} ended {dep['status']}: {dep['reason']}")
                await poller.until(version, after=0, timeout=30)
            serving = await wait(lambda: _serving_pid(home / "conveyor.db", tier), "a pid")
            _release, pid = serving
            # Not in step with the monitor: a random moment within one interval.
            await asyncio.sleep(_seconds(INTERVAL) * ((n * 0.37) % 1))
            since = records.last_event_id()
            killed = time.time()
            os.killpg(pid, signal.SIGKILL)
            await wait(lambda p=pid: not _alive(p), "the release to die", 10)  # type: ignore[misc]
            row: dict[str, float] = {}
            if tier == "production":
                back = await poller.until(previous, after=killed, timeout=60)

                def rolled_back(s: int = since) -> float | None:
                    for ev in records.events(s):
                        if ev["type"] == "deployment.succeeded" and ev.get("kind") == "rollback":
                            return float(ev["ts"])
                    return None

                done = await wait(rolled_back, "the rollback to succeed")
                row["death_to_serving_previous"] = back - killed
                row["death_to_rollback_succeeded"] = done - killed
                version = previous
            else:
                back = await poller.until(version, after=killed, timeout=60)

                def restarted(s: int = since) -> float | None:
                    for ev in records.events(s):
                        if ev["type"] == "environment.restarted":
                            return float(ev["ts"])
                    return None

                done = await wait(restarted, "environment.restarted")
                row["death_to_serving_again"] = back - killed
                row["death_to_restarted_event"] = done - killed
                # Each round a fresh death, not the next of a series: wait until the monitor's
                # passing checks cleared this one (its strikes and its restart backoff).
                horizon = back + failures * _seconds(INTERVAL)
                await wait(
                    lambda h=horizon: _cleared(home / "conveyor.db", tier, h),  # type: ignore[misc]
                    "the monitor's checks to pass again",
                )
            per_round.append(row)
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        if poller is not None:
            poller.stop()
        store.close()
        stop_release_processes(home)
    keys = list(per_round[0])
    return {
        "tier": tier,
        "rounds": len(per_round),
        **{
            k: {
                "median_s": round(statistics.median(r[k] for r in per_round), 2),
                "max_s": round(max(r[k] for r in per_round), 2),
                "all_s": [round(r[k], 2) for r in per_round],
            }
            for k in keys
        },
    }


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    results: dict[str, Any] = {
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "interval": INTERVAL,
        "failures_production": FAILURES,
        "target_s": _seconds(INTERVAL) + TARGET_SLACK,
        "poll_ms": POLL * 1000,
    }
    for tier in ("staging", "production"):
        with tempfile.TemporaryDirectory(prefix="conveyor-death-") as tmp:
            results[tier] = asyncio.run(_scenario(Path(tmp), tier, rounds))
    return results


def table(r: dict[str, Any]) -> str:
    st, pr = r["staging"], r["production"]

    def cell(d: dict[str, Any]) -> str:
        return f"{d['median_s']} / {d['max_s']} s"

    return "\n".join(
        [
            "| figure (median / max) | value |",
            "|---|---|",
            f"| non-production: kill -9 → stable URL answers the release again "
            f"| **{cell(st['death_to_serving_again'])}** |",
            f"| non-production: kill -9 → `environment.restarted` "
            f"| {cell(st['death_to_restarted_event'])} |",
            f"| production (failures: {r['failures_production']}): kill -9 → stable URL answers "
            f"the previous release | **{cell(pr['death_to_serving_previous'])}** |",
            f"| production: kill -9 → rollback deployment succeeded "
            f"| {cell(pr['death_to_rollback_succeeded'])} |",
        ]
    )


def section(r: dict[str, Any]) -> str:
    return f"""
## A serving release dies (`bench/serving_death.py`)

Target: ≤ monitor interval + {TARGET_SLACK:g} s = {r["target_s"]:g} s. A DeliveryController
in-process (as in `conveyor server`), the process target, `monitor: {{ interval:
{r["interval"]} }}`; each round kill -9s the serving release's process group at a moment out of
step with the monitor and times, from the kill, the first answer of the stable URL seen by a
separate process polling every {r["poll_ms"]:g} ms. {r["staging"]["rounds"]} rounds per tier;
load average (1 min) at the start: {r["load_average_at_start"]} on {os.cpu_count()} cores.

{table(r)}

Detection takes up to one interval by construction (the monitor looks at each serving release
once per interval); the rest is the restart (same release, started again) or the rollback
(incident, rollback deployment, the previous release started and checked).
"""


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
    print(json.dumps(result, indent=2))
    print(table(result))
