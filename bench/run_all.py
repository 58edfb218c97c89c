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
| the intake's server (1 runner slot): RSS 1 s after start-up | \
{w["server_idle_rss_mib"]} MiB | see below |
| the intake's server after {w["deliveries"]} deliveries | \
{w["server_rss_after_load_mib"]} MiB | — |
"""


def _section_rollback(r: dict[str, Any]) -> str:
    import delivery_rollback

    rc = r["recreate"]
    path = {s["span"]: s for s in rc["path_after_verdict"]}
    route = path.get("route proxy → the old release", {}).get("starts_at_ms")
    client = path.get("httpx.AsyncClient() made", {}).get("takes_ms")
    launch = path.get("launch the old release (spawn → port accepts)", {}).get("takes_ms")
    serving = rc["verdict_to_serving"]["median_ms"]
    slow_client = (
        f" The rollback's health check builds its `httpx.AsyncClient` (an SSL context, {client} ms"
        " of CPU) on the loop that also carries the proxy, which delays users meanwhile."
        if client is not None and client >= 5
        else ""
    )
    return f"""## Delivery: failed health check → previous release serving (target ≤ 2 s)

The process target, a controller run in the benchmark's process (its `serve()` loop, its proxy
on that event loop); a stdlib HTTP service released by `conveyor run` ({rc["rounds"]} rounds of
a healthy release, then one whose `/healthz` answers 503; HTTP check every {r["interval"]},
`within: {r["within"]}`). The stable URL is polled from another process every
{r["poll_ms"]:g} ms on a fresh connection. Median / max over the rounds; load average (1 min)
at the start: {r.get("load_average_at_start", "?")} on {os.cpu_count()} cores.

{delivery_rollback.table(r)}

Where the recreate rollback's time goes (spans timed by wrappers the benchmark installs around
the controller's calls; medians, from the check's verdict):

{delivery_rollback.path_table(r)}

The service alone takes {r["service_alone_start_ms"]} ms from spawn to accepting (probed every
1 ms); the target probes the port every 20 ms and takes {launch} ms. The proxy forwards to the
old release from {route} ms; the poller (a fresh connection every {r["poll_ms"]:g} ms, through
the proxy on the controller's event loop) sees it at {serving} ms.{slow_client} Detection is \
the check's `within` by construction: a 503
never passes, and the check waits out its window before it fails.
"""


def _section_promotion(r: dict[str, Any]) -> str:
    import delivery_promotion

    return f"""## Delivery: release created → production serving

A real `conveyor server`; each of {r["rounds"]} pushes (after a warm-up) goes through the git
hook, the server's run makes a release, and its controller takes it through staging (process,
blue-green, HTTP check, one verification command) and production (`after: staging`, process,
recreate, HTTP check), no approval. Phases from the store's events and deployment records (the
deployment log's own time stamps are whole seconds); the release folder's change time ends
bundle preparation. Push → release created: {r["push_to_release_created_ms"]} ms (median).
Load average (1 min) at the start: {r.get("load_average_at_start", "?")} on {os.cpu_count()} \
cores.

{delivery_promotion.table(r)}

With recreate, production answers the new version before its health check has passed: the old
release is stopped and the new one routed as soon as its port accepts.
"""


def _section_summary(r: dict[str, Any]) -> str:
    """One table: each figure of the design's section 7 (and the others), its target, met?"""
    rows: list[tuple[str, str, str, bool | None]] = []

    def row(what: str, target: str, value: str, met: bool | None = None) -> None:
        rows.append((what, target, value, met))

    if "engine_overhead" in r:
        ms = r["engine_overhead"]["per_step_overhead_ms"]
        row("engine overhead per step, against bash", "≤ 10 ms median", f"{ms} ms", ms <= 10)
    if "sandbox_overhead" in r:
        ms = r["sandbox_overhead"]["pipeline"]["sandbox_per_step_ms"]
        row("sandbox's part of it, per step (bubblewrap)", "≤ +5 ms median", f"{ms} ms", ms <= 5)
    if "push_latency" in r:
        c = r["push_latency"]
        step, end = c["push_to_first_step"]["median_ms"], c["push_to_finished"]["median_ms"]
        row("push → first step started (local hook)", "≤ 150 ms median", f"{step} ms", step <= 150)
        row("push → one-step pipeline finished", "≤ 0.3 s median", f"{end} ms", end <= 300)
        if "buildbot" in r:
            peer = r["buildbot"]["push_to_finished"]["median_ms"]
            row(
                "… against Buildbot doing the same",
                "≥ 5× faster",
                f"{peer / end:.1f}× (Buildbot {peer} ms)",
                peer / end >= 5,
            )
    if "dispatch" in r:
        d = r["dispatch"]
        row(f"dispatch over {d['agents']} runner agents", "—", f"{d['jobs_per_second']} jobs/s")
    if "webhook_intake" in r:
        w = r["webhook_intake"]["accepted_per_second"]
        row("webhook intake (signed, accepted)", "≥ 1,000 /s", f"{w:,} /s", w >= 1000)
    if "server_memory" in r:
        m = r["server_memory"]
        mb = m["idle_rss_mib"] * 2**20 / 1e6
        row(
            "server memory, idle",
            "≤ 120 MB RSS",
            f"{mb:.0f} MB ({m['idle_rss_mib']} MiB)",
            mb <= 120,
        )
        row(
            "server memory, under load: peak / settled",
            "—",
            f"{m['peak_rss_mib']} / {m['settled_rss_mib']} MiB",
        )
    if "unauth_bodies" in r:
        u = r["unauth_bodies"]
        row(
            f"RSS while {u['clients']} clients send {u['body_mb']} MB bodies without a token",
            "≤ idle + 50 MB",
            f"+{u['token_routes_growth_mib']} MiB (idle {u['idle_rss_mib']} MiB); forge "
            f"webhooks, read to check their signature: +{u['growth_mib']} MiB",
            u["token_routes_growth_mib"] * 2**20 / 1e6 <= 50,
        )
    if "delivery_rollback" in r:
        v = r["delivery_rollback"]["recreate"]["verdict_to_serving"]
        row(
            "failed health check → previous release serving (process target)",
            "≤ 2 s",
            f"{v['median_ms']} ms median, {v['max_ms']} ms max",
            v["max_ms"] <= 2000,
        )
    if "serving_death" in r:
        d = r["serving_death"]
        limit = d["target_s"]
        for label, v in (
            (
                "serving release killed → started again (non-production)",
                d["staging"]["death_to_serving_again"],
            ),
            (
                f"serving release killed → rolled back (production, failures: "
                f"{d['failures_production']})",
                d["production"]["death_to_serving_previous"],
            ),
        ):
            row(
                label,
                f"≤ interval ({d['interval']}) + 5 s",
                f"{v['median_s']} s median, {v['max_s']} s max",
                v["median_s"] <= limit,
            )
    if "delivery_promotion" in r:
        ms = r["delivery_promotion"]["median_ms"]["created_to_production_serving"]
        row("release created → production serving (via staging)", "—", f"{ms} ms median")
    if "dora_scale" in r:
        a = r["dora_scale"]["dora"]["all"]
        row(
            "DORA over 1,000,000 deployments, 5,000,000 commits",
            "≤ 2 s",
            f"{a['wall_s']} s",
            a["wall_s"] <= 2,
        )
        i = r["dora_scale"]["import"]["records_per_s"]
        row("history import (`conveyor import`)", "—", f"{i:,} records/s")
    if "dora_real" in r:
        api = r["dora_real"]["real"]["api"]
        cli = r["dora_real"]["real"]["cli"]
        runs = r["dora_real"]["real"]["dataset"]["runs"]
        row(
            f"DORA, 90 days, {runs:,} runs written through the real tables, one core: "
            "`GET /api/v1/dora` in-process first (summary dropped) / repeated; `conveyor dora` "
            "first after `db upgrade` / repeated (CPU time)",
            "≤ 1 s",
            f"{api['first_s']} s / {api['repeated_s']} s; {cli['first_cpu_s']} s / "
            f"{cli['repeated_cpu_s']} s",
            max(api["first_s"], api["repeated_s"], cli["first_cpu_s"], cli["repeated_cpu_s"]) <= 1,
        )
    if "agent_log" in r:
        g = r["agent_log"]
        row(
            f"{g['megabytes']} MB step log through a runner agent, against the built-in runner",
            "≤ 2×",
            f"{g['ratio']}× ({g['agent']['seconds']} s / {g['builtin']['seconds']} s), "
            f"leased {g['agent']['leases']}×, stored once: {g['agent']['log_stored_once']}",
            g["met"],
        )
    if "log_read" in r:
        g = r["log_read"]
        p = g["page_ms"]
        row(
            f"{g['megabytes']} MB log read through the API page by page (10,000 lines a page); "
            "first / middle / last page",
            "≤ 10 s; pages alike",
            f"{g['paged']['seconds']} s ({g['paged']['cpu_seconds']} s CPU); "
            f"{p['first']} / {p['middle']} / {p['last']} ms; raw download {g['raw']['seconds']} s",
            g["met"],
        )
    if "exposition_size" in r:
        e = r["exposition_size"]
        row(
            f"`/metrics` before any event, {e['services']} services × {e['environments']} "
            "environments (every counter and histogram at 0)",
            "—",
            f"{e['series']:,} series, {e['bytes'] / 1e6:.1f} MB",
            None,
        )
    if "exactly_once" in r and "skipped" not in r["exactly_once"]:
        x = r["exactly_once"]
        row(
            f"duplicate runs, {x['pushes']} pushes to {x['servers']} servers (PostgreSQL)",
            "0",
            f"{x['duplicate_runs']} ({x['server_errors']} 5xx)",
            x["met"],
        )
    if "cli_startup" in r:
        c = r["cli_startup"]
        for what, key, limit in (
            ("`conveyor runs` against a server, a fresh process", "runs_server", 150),
            ("`conveyor runs` on the local store, a fresh process", "runs_local", 300),
        ):
            ms, cpu = c[key]["median_ms"], c[key].get("cpu_median_ms")
            measured = f"{ms} ms" + (f" ({cpu} ms CPU)" if cpu is not None else "")
            row(what, f"≤ {limit} ms median", measured, ms <= limit)
    lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
    for what, target, value, met in rows:
        lines.append(
            f"| {what} | {target} | {value} | {'' if met is None else 'yes' if met else '**no**'} |"
        )
    return (
        "## Summary\n\n" + "\n".join(lines) + "\n\nThe sections below say how each was measured.\n"
    )


BENCHMARKS = (
    "engine_overhead",
    "sandbox_overhead",
    "push_latency",
    "buildbot",
    "dispatch",
    "webhook_intake",
    "server_memory",
    "unauth_bodies",
    "delivery_rollback",
    "serving_death",
    "delivery_promotion",
    "dora_scale",
    "dora_real",
    "edge_outage",
    "agent_log",
    "exactly_once",
    "cli_startup",
    "log_read",
    "exposition_size",
)


def _measure(name: str) -> dict[str, Any]:
    import agent_log
    import buildbot_peer
    import cli_startup
    import delivery_promotion
    import delivery_rollback
    import dispatch_throughput
    import dora_real
    import dora_scale
    import edge_outage
    import exactly_once
    import exposition_size
    import log_read
    import push_latency
    import sandbox_overhead
    import server_memory
    import serving_death
    import unauth_bodies
    import webhook_intake

    runs: dict[str, Any] = {
        "engine_overhead": engine_overhead.measure,
        "sandbox_overhead": sandbox_overhead.measure,
        "push_latency": push_latency.measure,
        "buildbot": lambda: buildbot_peer.measure_buildbot(50),
        "dispatch": dispatch_throughput.measure,
        "webhook_intake": webhook_intake.measure,
        "server_memory": server_memory.measure,
        "unauth_bodies": unauth_bodies.measure,
        "delivery_rollback": delivery_rollback.measure,
        "serving_death": serving_death.measure,
        "delivery_promotion": delivery_promotion.measure,
        "dora_scale": dora_scale.measure,
        "dora_real": dora_real.measure,
        "edge_outage": edge_outage.measure,
        "agent_log": agent_log.measure,
        "exactly_once": exactly_once.measure,
        "cli_startup": cli_startup.measure,
        "log_read": log_read.measure,
        "exposition_size": exposition_size.measure,
    }
    result: dict[str, Any] = runs[name]()
    return result


def _previous_run() -> str:
    """The "Last run:" of the README as it is (for results measured before runs were stamped)."""
    try:
        for line in (HERE / "README.md").read_text().splitlines():
            if line.startswith("Last run: "):
                return line.removeprefix("Last run: ").rstrip(".")
    except OSError:
        pass
    return "an earlier run"


def main(only: list[str] | None = None) -> None:
    """Run every benchmark, or only those named (`python bench/run_all.py delivery_rollback`;
    none with `--render`, which only rewrites the README): the others keep their results from
    bench/results/latest.json, and the README says when and where each was measured."""
    unknown = sorted(set(only or ()) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    latest = HERE / "results" / "latest.json"
    if only is not None and not latest.exists():
        # It is not committed: without it, the other sections would vanish from the README.
        sys.exit(f"{latest} holds no earlier results to keep: run `make bench` first")
    results: dict[str, Any] = json.loads(latest.read_text()) if only is not None else {}
    measured: dict[str, str] = results.pop("_measured", {})
    for name in BENCHMARKS:
        if name in results and name not in measured:
            measured[name] = _previous_run()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    here = f"{stamp} on {machine()}"
    (HERE / "results").mkdir(exist_ok=True)
    base: dict[str, Any] = json.loads(latest.read_text()) if latest.exists() else {}
    base_measured: dict[str, str] = base.pop("_measured", {})
    for name in BENCHMARKS if only is None else only:
        results[name] = _measure(name)
        measured[name] = here
        # Saved after each: if a later benchmark fails, these results are not lost (and
        # `python bench/run_all.py NAME` can redo the one that failed).
        saved = {**base, **results, "_measured": {**base_measured, **measured}}
        latest.write_text(json.dumps(saved, indent=2))
    latest.write_text(json.dumps({**results, "_measured": measured}, indent=2))
    runs: dict[str, list[str]] = {}
    for name in BENCHMARKS:
        if name in results:
            runs.setdefault(measured[name], []).append(name)
    if len(runs) == 1:
        when = f"Last run: {next(iter(runs))}."
    else:
        when = "\n".join(f"- {', '.join(names)}: {run}." for run, names in runs.items())
        when = f"Last runs:\n\n{when}"
    sections = [_section_summary(results)]
    if {"engine_overhead"} <= results.keys():
        sections.append(_section_engine(results["engine_overhead"]))
    if "sandbox_overhead" in results:
        import sandbox_overhead

        sections.append(sandbox_overhead.section(results["sandbox_overhead"]))
    if {"push_latency", "buildbot"} <= results.keys():
        sections.append(_section_push(results["push_latency"], results["buildbot"]))
    if {"dispatch", "webhook_intake"} <= results.keys():
        sections.append(_section_server(results["dispatch"], results["webhook_intake"]))
    if "server_memory" in results:
        import server_memory

        sections.append(server_memory.section(results["server_memory"]))
    if "unauth_bodies" in results:
        import unauth_bodies

        sections.append(unauth_bodies.section(results["unauth_bodies"]))
    if "delivery_rollback" in results:
        sections.append(_section_rollback(results["delivery_rollback"]))
    if "serving_death" in results:
        import serving_death

        sections.append(serving_death.section(results["serving_death"]))
    if "delivery_promotion" in results:
        sections.append(_section_promotion(results["delivery_promotion"]))
    if "dora_scale" in results:
        import dora_scale

        sections.append(dora_scale.section(results["dora_scale"]))
    if "dora_real" in results:
        import dora_real

        sections.append(dora_real.section(results["dora_real"]))
    if "edge_outage" in results:
        import edge_outage

        sections.append(edge_outage.section(results["edge_outage"]))
    if "agent_log" in results:
        import agent_log

        sections.append(agent_log.section(results["agent_log"]))
    if "exactly_once" in results:
        import exactly_once

        sections.append(exactly_once.section(results["exactly_once"]))
    if "cli_startup" in results:
        import cli_startup

        sections.append(cli_startup.section(results["cli_startup"]))
    if "exposition_size" in results:
        import exposition_size

        sections.append(exposition_size.section(results["exposition_size"]))
    if "log_read" in results:
        import log_read

        sections.append(log_read.section(results["log_read"]))
    body = "\n".join(sections)
    text = f"""# Benchmarks

Run by `make bench` (`bench/run_all.py`); each run rewrites this file. Targets come from the
design (section 7) and are measured here, never asserted in tests. `python bench/run_all.py
NAME...` runs only the named benchmarks (see BENCHMARKS there) and keeps the others' last results;
`--render` only rewrites this file from bench/results/latest.json.

{when}

{body}"""
    (HERE / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([] if args == ["--render"] else args or None)
