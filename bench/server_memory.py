"""Server memory (RSS) of a real `conveyor server` (fresh home, SQLite): idle after start-up,
and under load (design target: idle ≤ 120 MB RSS).

Idle: the server is started, answers /api/v1/health, and is left alone for SETTLE_S; then
VmRSS and VmHWM from /proc/PID/status.

Load, all at once against the same server: WEBHOOK_RUNS signed GitHub push deliveries (one per
commit on `release`, the service's push branch) and API_RUNS runs queued with POST /runs, each
a three-job pipeline (log output, a pause, an artifact) carried out by the built-in runner
(RUNNERS jobs at once) and released to a `production` environment (process target, recreate,
HTTP health check) by the server's controller; meanwhile READS API reads (run lists, run
details, logs, deployments, incidents, services, /metrics), a POST /import of IMPORT_RECORDS
history records (bench/dora_scale.py's generator) and two DORA reports. The load ends when
every run and deployment has ended. A thread samples VmRSS every SAMPLE_S throughout; the peak
is the kernel's VmHWM (no sample can miss it). Settled: VmRSS SETTLE_S after the load ended.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server
from delivery_rollback import APP, START, git, stop_release_processes
from dora_scale import import_lines

from conveyor.forges.github import sign_github

SERVICE = "loaded"
WEBHOOK_RUNS = 50
API_RUNS = 10
RUNNERS = 4
READS = 400
IMPORT_RECORDS = 20_000
SETTLE_S = 5.0
SAMPLE_S = 0.02
LOG_LINES = 1000  # per run: the build job prints them
ARTIFACT_KIB = 256
TERMINAL_RUN = {"succeeded", "failed", "cancelled"}
TERMINAL_DEPLOYMENT = {"succeeded", "failed", "rolled_back", "cancelled", "superseded", "rejected"}

PIPELINE = f"""service: {SERVICE}
on:
  push: {{ branches: [release] }}
jobs:
  build:
    run: seq 1 {LOG_LINES}
  test:
    needs: [build]
    steps:
      - run: sleep 0.2
      - run: echo tested
  package:
    needs: [test]
    run: mkdir -p dist && head -c {ARTIFACT_KIB * 1024} /dev/urandom > dist/blob.bin
    artifacts: [dist/*]
environments:
  production:
    deploy: {{ target: process, start: '{START}' }}
    health: {{ http: {{ path: /healthz, within: 5s, interval: 50ms }} }}
"""


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Sampler(threading.Thread):
    """VmRSS every SAMPLE_S, as (seconds since start, KiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.began = time.monotonic()

    def run(self) -> None:
        began = self.began
        while not self.halt.is_set():
            try:
                rss = status_kib(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.samples.append((time.monotonic() - began, rss))
            self.halt.wait(SAMPLE_S)


def _repo(root: Path, commits: int) -> tuple[Path, list[str]]:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "release")
    (repo / "app.py").write_text(APP)
    (repo / "HEALTHY").write_text("yes\n")
    (repo / "conveyor.yml").write_text(PIPELINE)
    shas = []
    for n in range(commits):
        (repo / "VERSION").write_text(f"v{n}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"version {n}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return repo, shas


def _delivery(secret: str, n: int, before: str, after: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "ref": "refs/heads/release",
            "before": before,
            "after": after,
            "repository": {"full_name": f"acme/{SERVICE}"},
            "pusher": {"name": "bench"},
            "commits": [
                {
                    "id": after,
                    "message": f"version {n}",
                    "timestamp": "2026-11-26T10:00:00Z",
                    "author": {"name": "Bench", "email": "bench@example.com"},
                }
            ],
        }
    ).encode()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": f"memory-{n}",
        "X-Hub-Signature-256": sign_github(secret, body),
        "Content-Type": "application/json",
    }
    return body, headers


class Reader(threading.Thread):
    """READS API reads over the run's lifetime: lists, details, logs, delivery records."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.statuses: dict[int, int] = {}
        self.error: BaseException | None = None

    def get(self, path: str, **params: Any) -> httpx.Response:
        response = self.client.get(path, params=params)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        return response

    def run(self) -> None:
        rng = random.Random(7)  # noqa: S311
        try:
            run_ids: list[int] = []
            for n in range(READS):
                kind = n % 8
                if kind == 0 or not run_ids:
                    runs = self.get("/api/v1/runs", limit=100).json()
                    run_ids = [r["id"] for r in runs] or run_ids
                elif kind in (1, 2):
                    self.get(f"/api/v1/runs/{rng.choice(run_ids)}")
                elif kind == 3:
                    self.get(f"/api/v1/runs/{rng.choice(run_ids)}/logs", job="build")
                elif kind == 4:
                    self.get("/api/v1/deployments", limit=100)
                elif kind == 5:
                    self.get("/api/v1/incidents")
                elif kind == 6:
                    self.get("/api/v1/services")
                else:
                    self.get("/metrics")
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.client.close()


def _wait_until_done(client: httpx.Client, runs: int, deadline_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        listed = client.get("/api/v1/runs", params={"limit": 1000}).json()
        deps = client.get("/api/v1/deployments", params={"limit": 1000}).json()
        ours = [d for d in deps if d.get("service") == SERVICE]
        runs_done = len(listed) >= runs and all(r["status"] in TERMINAL_RUN for r in listed)
        releases = {d["release"] for d in ours}
        if runs_done and all(d["status"] in TERMINAL_DEPLOYMENT for d in ours):
            # Every succeeded run made a release; each reaches production (or is passed over).
            succeeded = sum(r["status"] == "succeeded" for r in listed)
            if len(releases) >= succeeded:
                return {"runs": listed, "deployments": ours}
        time.sleep(0.2)
    runs_seen = _count([r["status"] for r in listed])
    deps_seen = _count([d["status"] for d in ours])
    raise RuntimeError(
        f"runs and deployments not finished within {deadline_s} s: "
        f"{runs} runs expected, runs {runs_seen}, deployments {deps_seen}"
    )


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-memory-") as tmp:
        root = Path(tmp)
        repo, shas = _repo(root, WEBHOOK_RUNS + API_RUNS)
        history = "\n".join(import_lines(IMPORT_RECORDS)) + "\n"
        server = Server(root / "home", runners=RUNNERS)
        out = server.cli("service", "add", SERVICE, "--repo", str(repo), "--webhook-secret")
        secret = out.split("(shown once): ")[1].strip()
        admin = server.token("bench-admin", "admin")
        load_average = round(os.getloadavg()[0], 2)
        started = time.monotonic()
        server.start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            ready_s = time.monotonic() - started
            time.sleep(SETTLE_S)  # the idle figure is of a server left alone after start-up
            idle = status_kib(pid)
            sampler = Sampler(pid)
            sampler.start()
            client = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=120
            )
            load_began = sampler.began
            phases: list[tuple[str, float, int]] = []  # (phase, seconds when it ended, RSS KiB)

            def ended(phase: str) -> None:
                phases.append((phase, time.monotonic() - load_began, status_kib(pid)["VmRSS"]))

            reader = Reader(server.url, admin)
            reader.start()
            hooks: dict[str, int] = {}
            before = "0" * 40
            for n, sha in enumerate(shas[:WEBHOOK_RUNS]):
                body, headers = _delivery(secret, n, before, sha)
                code = client.post(
                    f"/api/v1/hooks/github/{SERVICE}", content=body, headers=headers
                ).status_code
                hooks[str(code)] = hooks.get(str(code), 0) + 1
                before = sha
            if hooks != {"202": WEBHOOK_RUNS}:
                raise RuntimeError(f"not every webhook delivery was accepted: {hooks}")
            ended(f"{WEBHOOK_RUNS} webhooks accepted")
            for sha in shas[WEBHOOK_RUNS:]:
                # No ref: a run that names the branch would make the webhooks still queued
                # for older commits late deliveries (ignored), as they would be.
                client.post(
                    "/api/v1/runs", json={"service": SERVICE, "rev": sha}
                ).raise_for_status()
            ended(f"{API_RUNS} runs queued over the API")
            imported = client.post(
                "/api/v1/import",
                content=history.encode(),
                headers={"Content-Type": "application/x-ndjson"},
            )
            imported.raise_for_status()
            ended(f"POST /import of {IMPORT_RECORDS:,} records")
            dora_s = []
            for params in ({"from": "2023-01-01", "to": "2024-01-01"}, {}):
                t0 = time.monotonic()
                client.get("/api/v1/dora", params=params).raise_for_status()
                dora_s.append(round(time.monotonic() - t0, 3))
            ended("two DORA reports")
            done = _wait_until_done(client, WEBHOOK_RUNS + API_RUNS, 300)
            reader.join(timeout=600)
            ended("every run and deployment ended")
            load_s = time.monotonic() - load_began
            loaded = status_kib(pid)
            sampler.halt.set()
            sampler.join()
            time.sleep(SETTLE_S)  # settled: the same wait as for the idle figure
            settled = status_kib(pid)
            client.close()
        finally:
            server.stop()
            stop_release_processes(root / "home")
    if reader.error is not None:
        raise RuntimeError(f"API reads failed: {reader.error!r}")
    if set(reader.statuses) != {200}:
        raise RuntimeError(f"API reads answered {reader.statuses}")
    run_statuses = _count([r["status"] for r in done["runs"]])
    if run_statuses != {"succeeded": WEBHOOK_RUNS + API_RUNS}:
        raise RuntimeError(f"runs ended {run_statuses}")
    rss = [kib for _, kib in sampler.samples]
    peak_at = max(sampler.samples, key=lambda s: s[1])[0] if sampler.samples else 0.0
    peak_phase = next((name for name, at, _ in phases if at >= peak_at), phases[-1][0])

    def mib(kib: float) -> float:
        return round(kib / 1024, 1)

    summary = imported.json()
    return {
        "load_average_at_start": load_average,
        "ready_s": round(ready_s, 2),
        "settle_s": SETTLE_S,
        "idle_rss_mib": mib(idle["VmRSS"]),
        "idle_hwm_mib": mib(idle["VmHWM"]),
        # The kernel updates VmHWM lazily (when memory is unmapped): a sample can be higher.
        "peak_rss_mib": mib(max(loaded["VmHWM"], *rss)),
        "peak_hwm_mib": mib(loaded["VmHWM"]),
        "peak_sampled_mib": mib(max(rss)),
        "peak_at_s": round(peak_at, 1),
        "peak_phase": peak_phase,
        "phases": [
            {"phase": name, "ended_at_s": round(at, 1), "rss_mib": mib(kib)}
            for name, at, kib in phases
        ],
        "median_sampled_under_load_mib": mib(statistics.median(rss)),
        "end_of_load_rss_mib": mib(loaded["VmRSS"]),
        "settled_rss_mib": mib(settled["VmRSS"]),
        "samples": len(rss),
        "load": {
            "webhook_runs": WEBHOOK_RUNS,
            "api_runs": API_RUNS,
            "runners": RUNNERS,
            "jobs_per_run": 3,
            "log_lines_per_run": LOG_LINES,
            "artifact_kib_per_run": ARTIFACT_KIB,
            "run_statuses": run_statuses,
            "deployment_statuses": _count([d["status"] for d in done["deployments"]]),
            "reads": sum(reader.statuses.values()),
            "import_records": IMPORT_RECORDS,
            "import_mib": round(len(history) / 2**20, 1),
            "imported_deployments": summary["deployments"]["added"],
            "imported_incidents": summary["incidents"]["added"],
            "dora_reports_s": dora_s,
            "seconds": round(load_s, 1),
        },
    }


def section(r: dict[str, Any]) -> str:
    ld = r["load"]
    deps = ", ".join(f"{n} {s}" for s, n in ld["deployment_statuses"].items())
    runs = ", ".join(f"{n} {s}" for s, n in ld["run_statuses"].items())
    dora = ", ".join(f"{s} s" for s in ld["dora_reports_s"])
    phases = "\n".join(
        f"| {p['phase']} | {p['ended_at_s']} s | {p['rss_mib']} MiB |" for p in r.get("phases", [])
    )
    return f"""## Server memory (target: idle ≤ 120 MB RSS)

A real `conveyor server` (fresh home, SQLite, its built-in runner with {ld["runners"]} slots);
the server process's VmRSS and VmHWM from /proc (bench/server_memory.py). Idle: \
{r["settle_s"]:g} s after it first answered (it answered {r["ready_s"]} s after its start).

The load, all against that server at once: {ld["webhook_runs"]} signed GitHub push webhooks \
and {ld["api_runs"]} runs queued over the API, each a three-job pipeline (a \
{ld["log_lines_per_run"]}-line log, a pause, a {ld["artifact_kib_per_run"]} KiB artifact) \
whose release goes to production (process target, recreate, HTTP health check) — runs: \
{runs}; deployments: {deps}; meanwhile {ld["reads"]} API reads (runs, run details, logs, \
deployments, incidents, services, /metrics), a POST /import of {ld["import_records"]:,} history \
records ({ld["import_mib"]} MiB: {ld["imported_deployments"]:,} deployments, \
{ld["imported_incidents"]:,} incidents) and two DORA reports over the API ({dora}). The load \
lasted {ld["seconds"]} s, until every run and deployment had ended; RSS sampled every \
{SAMPLE_S * 1000:g} ms. Load average (1 min) before the server started: \
{r["load_average_at_start"]} on {os.cpu_count()} cores.

| server process | RSS |
|---|---|
| idle after start-up (VmRSS) | **{r["idle_rss_mib"]} MiB** \
({r["idle_rss_mib"] * 2**20 / 1e6:.0f} MB) |
| peak during start-up (VmHWM before the load) | {r["idle_hwm_mib"]} MiB |
| peak under load (the larger of VmHWM and the samples) | **{r["peak_rss_mib"]} MiB** \
({r["peak_at_s"]} s into the load, until: {r.get("peak_phase", "?")}) |
| median under load (sampled) | {r["median_sampled_under_load_mib"]} MiB |
| settled, {r["settle_s"]:g} s after the load | **{r["settled_rss_mib"]} MiB** |

| load phase, until | ended at | RSS then |
|---|---|---|
{phases}

CPython seldom gives memory it has touched back to the system (its allocator keeps arenas), so
the settled figure stays near the peak.
"""


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
