"""`make bench`: run every benchmark and write the results, with machine and date, to
bench/README.md. Timing targets live here, never as assertions in tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import engine_overhead

HERE = Path(__file__).parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"{mem:.0f} GiB, Python {platform.python_version()}, {git}"
    )


def main() -> None:
    results = {"engine_overhead": engine_overhead.measure()}
    overhead = results["engine_overhead"]
    (HERE / "results").mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2))
    walls = overhead["wall_s"]
    o = overhead
    text = f"""# Benchmarks

Run by `make bench` (`bench/run_all.py`); each run rewrites this file. Targets come from the
design (section 7) and are measured here, never asserted in tests.

Last run: {stamp} on {machine()}.

## Engine overhead per step (target ≤ 10 ms)

A pipeline of N jobs with one `true` step each, run by `conveyor run -j 1` as a fresh process,
against the same N commands in a bash script, median of {overhead["repeats"]} runs, N = 10 and 50.

| figure | value |
|---|---|
| per-step overhead (slope from 10 to 50 jobs, minus bash's) | **{o["per_step_overhead_ms"]} ms** |
| of which beyond spawning `bash -c true` (what a step is) | \
{o["per_step_beyond_spawning_a_shell_ms"]} ms |
| start-up per run (process, imports, store, git, plan) | {o["startup_per_run_ms"]} ms |
| whole command, 50 jobs, start-up spread over the steps | \
{o["whole_command_50_jobs_ms_per_step"]} ms per step |
| wall time, 10 / 50 jobs: conveyor | {walls["conveyor"]["10"]} s / {walls["conveyor"]["50"]} s |
| wall time, 10 / 50 jobs: bash script of builtins | \
{walls["builtin"]["10"]} s / {walls["builtin"]["50"]} s |
| wall time, 10 / 50 jobs: bash running `bash -c true` each | \
{walls["spawned"]["10"]} s / {walls["spawned"]["50"]} s |

Each job is recorded as it goes: queued, leased, step started, step finished, job finished, each
a transaction with its event, plus a fresh workspace copied from the commit's export.
"""
    (HERE / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
