"""What the sandbox (conveyor.sandbox) costs per step, side by side with no sandbox, in one run.

Two measures, each alternating the two modes so that both see the same machine load:
- per step, as bench/engine_overhead.py measures it: `conveyor run -j 1` of a 10-job and a
  50-job pipeline of one `true` step each, sandboxed (bubblewrap) and with CONVEYOR_SANDBOX=off;
  the slope from 10 to 50 jobs is what each further step costs, and the difference of the two
  slopes is the sandbox's part of it.
- per spawn: run_process(`bash -c true`) in a workspace, sandboxed and not, many times in one
  process; the difference of the medians is what the sandbox adds to starting one step's command.

A third mode, sandboxed without control groups (CONVEYOR_CGROUP=off), shows what the per-job
group (made, joined through bubblewrap's --block-fd, read and removed per step) adds.

Target: the sandbox adds at most 5 ms per step (median).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The same pipeline and timing as the engine-overhead benchmark, so the two figures compare.
from engine_overhead import GIT_IDENTITY, _repo, _timed

SIZES = (10, 50)
REPEATS = 11
SPAWNS = 200
TARGET_MS = 5.0
# Sandboxed with a control group per step (the default as root), sandboxed with per-process
# limits only, and unsandboxed.
MODES = {
    "bubblewrap": {},
    "no-groups": {"CONVEYOR_CGROUP": "off"},
    "off": {"CONVEYOR_SANDBOX": "off"},
}


def per_step(root: Path) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    base.update(GIT_IDENTITY)
    conveyor = [sys.executable, "-m", "conveyor", "run", "-j", "1"]
    wall: dict[str, dict[int, float]] = {mode: {} for mode in MODES}
    for jobs in SIZES:
        samples: dict[str, list[float]] = {mode: [] for mode in MODES}
        repo = _repo(root, jobs, base)
        envs = {
            mode: {**base, **extra, "CONVEYOR_HOME": str(root / f"home-{mode}-{jobs}")}
            for mode, extra in MODES.items()
        }
        for mode in MODES:
            _timed(conveyor, repo, envs[mode])  # warm-up: creates the store, fills caches
        for _ in range(REPEATS):
            for mode in MODES:
                samples[mode].append(_timed(conveyor, repo, envs[mode]))
        for mode in MODES:
            wall[mode][jobs] = statistics.median(samples[mode])
    small, large = SIZES
    slope = {m: (wall[m][large] - wall[m][small]) / (large - small) for m in MODES}
    return {
        "repeats": REPEATS,
        "wall_s": {m: {str(n): round(t, 4) for n, t in v.items()} for m, v in wall.items()},
        "per_step_ms": {m: round(s * 1000, 2) for m, s in slope.items()},
        "sandbox_per_step_ms": round((slope["bubblewrap"] - slope["off"]) * 1000, 2),
        "groups_per_step_ms": round((slope["bubblewrap"] - slope["no-groups"]) * 1000, 2),
    }


def per_spawn(root: Path) -> dict[str, Any]:
    from conveyor.proc import run_process
    from conveyor.sandbox import Sandbox, configure

    sandboxes: dict[str, Sandbox] = {
        "bubblewrap": configure(),
        "no-groups": configure(environ={**os.environ, **MODES["no-groups"]}),
        "off": Sandbox.off(),
    }
    workspace = root / "spawn-workspace"
    workspace.mkdir()
    sandboxes["bubblewrap"].claim(workspace)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}

    async def spawn(mode: str) -> None:
        started = time.perf_counter()
        result = await run_process(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "true"],
            cwd=workspace,
            env={"CONVEYOR_RUN_ID": "1", "CONVEYOR_WORKSPACE": str(workspace)},
            on_line=lambda line: None,
            sandbox=sandboxes[mode],
        )
        assert result.exit_code == 0, result
        times[mode].append(time.perf_counter() - started)

    async def measure() -> None:
        for _ in range(10):  # warm-up
            for mode in MODES:
                await spawn(mode)
        for samples in times.values():
            samples.clear()
        for _ in range(SPAWNS):
            for mode in MODES:
                await spawn(mode)

    asyncio.run(measure())
    median = {m: statistics.median(t) * 1000 for m, t in times.items()}
    p95 = {m: sorted(t)[int(len(t) * 0.95)] * 1000 for m, t in times.items()}
    return {
        "spawns": SPAWNS,
        "median_ms": {m: round(v, 2) for m, v in median.items()},
        "p95_ms": {m: round(v, 2) for m, v in p95.items()},
        "sandbox_per_spawn_ms": round(median["bubblewrap"] - median["off"], 2),
        "groups_per_spawn_ms": round(median["bubblewrap"] - median["no-groups"], 2),
    }


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-sandbox-") as tmp:
        root = Path(tmp)
        return {
            "target_ms": TARGET_MS,
            "spawn": per_spawn(root),
            "pipeline": per_step(root),
        }


def section(o: dict[str, Any]) -> str:
    p, s = o["pipeline"], o["spawn"]
    return f"""## Sandbox overhead per step (target ≤ +{o["target_ms"]:g} ms)

Every step, deploy command and check runs under bubblewrap, in a control group of its own
where the machine allows (decision 0010). Measured side by side with the groups off
(CONVEYOR_CGROUP=off) and the sandbox off (CONVEYOR_SANDBOX=off), the modes alternating in one
run.

| figure | sandboxed | without groups | off | sandbox adds | of which the group |
|---|---|---|---|---|---|
| engine overhead per step (`conveyor run -j 1`, slope 10 → 50 jobs, median of \
{p["repeats"]}) | {p["per_step_ms"]["bubblewrap"]} ms | {p["per_step_ms"]["no-groups"]} ms | \
{p["per_step_ms"]["off"]} ms | **{p["sandbox_per_step_ms"]} ms** | {p["groups_per_step_ms"]} ms |
| starting one step's command (`bash -c true` through run_process, median of \
{s["spawns"]}) | {s["median_ms"]["bubblewrap"]} ms | {s["median_ms"]["no-groups"]} ms | \
{s["median_ms"]["off"]} ms | **{s["sandbox_per_spawn_ms"]} ms** | {s["groups_per_spawn_ms"]} ms |
| the same, p95 | {s["p95_ms"]["bubblewrap"]} ms | {s["p95_ms"]["no-groups"]} ms | \
{s["p95_ms"]["off"]} ms | | |

The cost is bubblewrap (new mount, pid, ipc, uts and cgroup namespaces, a dozen mounts) and, as
root, setpriv: two more programs started per step (and, for `shell: sh` steps, a bash that
reads the step's environment before starting sh).
"""


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
