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
from typing import Any

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


def _section_engine(o: dict[str, Any]) -> str:
    walls = o["wall_s"]
    return f"""## Engine overhead per step (target ≤ 10 ms)

A pipeline of N jobs with one `true` step each, run by `conveyor run -j 1` as a fresh process,
against the same N commands in a bash script, median of {o["repeats"]} runs, N = 10 and 50.

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

Start-up is mostly Python importing SQLAlchemy, pydantic and asyncio; it is paid once per run.
"""


def _section_push(c: dict[str, Any], b: dict[str, Any]) -> str:
    def ratio(key: str, peer: str) -> str:
        return f"{b[peer]['median_ms'] / c[key]['median_ms']:.1f}×"

    return f"""## Push to pipeline (targets: ≤ 150 ms to step, ≤ 0.3 s to end, ≥ 5× Buildbot)

{c["pushes"]} pushes to a bare repository, each through the hook installed by
`conveyor hook install` (post-receive), into a real `conveyor server`; a one-job, one-step
(`true`) pipeline. Buildbot {b["versions"].get("buildbot", "4.3")} does the same in the same
run through its own post-receive hook (`buildbot sendchange`), with a one-step builder.
Times from just before `git push`.

| figure | Conveyor median / p95 | Buildbot median / p95 | Buildbot ÷ Conveyor |
|---|---|---|---|
| push → first step started | **{c["push_to_first_step"]["median_ms"]}** / \
{c["push_to_first_step"]["p95_ms"]} ms | {b["push_to_step_started"]["median_ms"]} / \
{b["push_to_step_started"]["p95_ms"]} ms | {ratio("push_to_first_step", "push_to_step_started")} |
| push → pipeline finished | **{c["push_to_finished"]["median_ms"]}** / \
{c["push_to_finished"]["p95_ms"]} ms | {b["push_to_finished"]["median_ms"]} / \
{b["push_to_finished"]["p95_ms"]} ms | {ratio("push_to_finished", "push_to_finished")} |
| `git push` returned | {c["git_push_returned"]["median_ms"]} / \
{c["git_push_returned"]["p95_ms"]} ms | {b["push_returned"]["median_ms"]} / \
{b["push_returned"]["p95_ms"]} ms | |

Conveyor's run checks out the commit into a fresh workspace before the step; Buildbot's builder
does no checkout. Last push, ms after the change reached the server:
{", ".join(f"{k} {v}" for k, v in c["last_push_timeline_ms"].items())}.
"""


def _section_server(d: dict[str, Any], w: dict[str, Any]) -> str:
    return f"""## Server

| figure | value | target |
|---|---|---|
| dispatch: {d["jobs"]} one-step jobs over {d["agents"]} runner agents (1 slot each) | \
**{d["jobs_per_second"]} jobs/s** ({d["seconds"]} s) | — |
| webhook intake: signed GitHub push deliveries accepted (202), {w["concurrency"]} \
connections | **{w["accepted_per_second"]} /s** (median {w["latency_median_ms"]} ms, \
p95 {w["latency_p95_ms"]} ms) | ≥ 1,000 /s |
| server memory, idle | {w["server_idle_rss_mib"]} MiB RSS | ≤ 120 MB |
| server memory after {w["deliveries"]} deliveries | {w["server_rss_after_load_mib"]} MiB RSS | — |
"""


def main() -> None:
    import buildbot_peer
    import dispatch_throughput
    import push_latency
    import webhook_intake

    results = {
        "engine_overhead": engine_overhead.measure(),
        "push_latency": push_latency.measure(),
        "buildbot": buildbot_peer.measure_buildbot(50),
        "dispatch": dispatch_throughput.measure(),
        "webhook_intake": webhook_intake.measure(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2))
    text = f"""# Benchmarks

Run by `make bench` (`bench/run_all.py`); each run rewrites this file. Targets come from the
design (section 7) and are measured here, never asserted in tests.

Last run: {stamp} on {machine()}.

{_section_engine(results["engine_overhead"])}
{_section_push(results["push_latency"], results["buildbot"])}
{_section_server(results["dispatch"], results["webhook_intake"])}"""
    (HERE / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
