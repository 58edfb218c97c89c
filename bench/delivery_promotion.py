"""Release created → production serving, through a real `conveyor server`, with the time of each
phase on the way.

The chain: staging (process target, blue-green, HTTP health check, one verification command)
→ production (`after: staging`, process target, recreate, HTTP health check), no approval, a
stdlib HTTP service (bench/delivery_rollback.py's APP). Each round pushes a new version to a
bare repository through the hook `conveyor hook install` puts there; the server runs the
one-step pipeline, the run makes a release, and the server's delivery controller (woken by the
release.created event, as it is for every run the server carries out) takes it through both
environments. A first round warms up (first deployment of each environment: proxies, no previous
release) and is not counted.

Every phase comes from what the store recorded: events (deployment.deploying, .checking,
.verifying, .succeeded, environment.switched, release.created), the deployment records (checks
with their durations, log lines), and the release folder's change time (written to a temporary
folder, then renamed: the rename ends bundle preparation). The deployment log's own time stamps
are whole seconds (HH:MM:SS), too coarse for these phases; the target's log line "accepts
connections on :PORT after X s" gives start → port ready. A separate process also polls the
production URL every 5 ms, to see when users get the new version.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server
from delivery_rollback import (
    APP,
    START,
    Poller,
    Records,
    event_ts,
    git,
    health,
    stop_release_processes,
)

ROUNDS = 7
SERVICE = "shop"
SMOKE = (
    "import os, urllib.request as u; "
    "assert u.urlopen(os.environ['CONVEYOR_DEPLOY_URL']).read().decode() == "
    "os.environ['EXPECT']"
)
PHASES = (
    ("queue", "release created → staging deployment started (publish: none; queue)"),
    ("staging_bundle", "staging: bundle preparation (export of the commit)"),
    ("staging_setup", "staging: rest of set-up (load, proxy, spawn, records)"),
    ("staging_start", "staging: target deploy, start → port ready"),
    ("staging_health", "staging: health check (first probe passes)"),
    ("staging_switch", "staging: switch (route proxy, stop previous release, records)"),
    ("staging_verify", "staging: verification (one command) and success"),
    ("promotion", "promotion: staging succeeded → production deployment started"),
    ("production_setup", "production: set-up (bundle kept from staging, stop previous, spawn)"),
    ("production_start", "production: target deploy, start → port ready"),
    ("production_health", "production: health check"),
    ("production_record", "production: recorded serving (environment.switched)"),
)


def conveyor_yml() -> str:
    # SMOKE has no ": " or "#", so it sits in a plain YAML scalar inside double quotes for bash.
    return f"""service: {SERVICE}
on:
  push: {{ branches: [main] }}
jobs:
  test:
    run: 'true'
environments:
  staging:
    deploy: {{ target: process, start: '{START}', strategy: blue-green }}
    {health("5s")}
    env: {{ EXPECT: "" }}
    verify:
      - run: {START.rsplit(" ", 1)[0]} -c "{SMOKE}"
  production:
    after: staging
    deploy: {{ target: process, start: '{START}' }}
    {health("5s")}
"""


def _port_ready(log: list[str]) -> float:
    for line in log:
        found = re.search(r"accepts connections on :\d+ after ([\d.]+) s", line)
        if found:
            return float(found.group(1))
    raise RuntimeError("no 'accepts connections' line in the deployment's log")


def _check_seconds(dep: dict[str, Any], kind: str) -> float:
    for check in dep["checks"] or []:
        if check["kind"] == kind:
            return float(check["duration"])
    raise RuntimeError(f"deployment {dep['id']} has no {kind} result")


def _phases(
    release_id: int,
    events: list[dict[str, Any]],
    records: Records,
    bundle_ready: float,
) -> dict[str, float]:
    [staging] = records.deployments(release_id=release_id, environment="staging")
    [production] = records.deployments(release_id=release_id, environment="production")
    s, p = staging["id"], production["id"]
    created = event_ts(events, "release.created", release=release_id)
    s_start = event_ts(events, "deployment.deploying", deployment=s)
    s_checking = event_ts(events, "deployment.checking", deployment=s)
    s_switched = event_ts(events, "environment.switched", deployment=s)
    s_done = event_ts(events, "deployment.succeeded", deployment=s)
    p_start = event_ts(events, "deployment.deploying", deployment=p)
    p_checking = event_ts(events, "deployment.checking", deployment=p)
    p_switched = event_ts(events, "environment.switched", deployment=p)
    p_done = event_ts(events, "deployment.succeeded", deployment=p)
    s_health, p_health = _check_seconds(staging, "http"), _check_seconds(production, "http")
    s_ready, p_ready = _port_ready(staging["log"]), _port_ready(production["log"])
    s_bundle = bundle_ready - s_start
    return {
        "queue": s_start - created,
        "staging_bundle": s_bundle,
        "staging_setup": (s_checking - s_start) - s_bundle - s_ready,
        "staging_start": s_ready,
        "staging_health": s_health,
        "staging_switch": (s_switched - s_checking) - s_health,
        "staging_verify": s_done - s_switched,
        "staging_verify_command": _check_seconds(staging, "verify"),
        "promotion": p_start - s_done,
        "production_setup": (p_checking - p_start) - p_ready,
        "production_start": p_ready,
        "production_health": p_health,
        "production_record": (p_switched - p_checking) - p_health,
        "created_to_production_serving": p_switched - created,
        "created_to_production_succeeded": p_done - created,
        "created_to_staging_serving": s_switched - created,
        "production_succeeded_after_switch": p_done - p_switched,
    }


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="conveyor-promotion-") as tmp:
        root = Path(tmp)
        bare, work, home = root / "shop.git", root / "work", root / "home"
        git(root, "init", "-q", "--bare", "-b", "main", str(bare))
        git(root, "clone", "-q", str(bare), str(work))
        server = Server(home, runners=2)
        server.cli("service", "add", SERVICE, "--repo", str(bare))
        admin = server.token("bench-admin", "admin")
        poller: Poller | None = None
        rows: list[dict[str, float]] = []
        answered: list[float] = []
        pushed: list[float] = []
        server.start()
        try:
            server.cli("hook", "install", str(bare), "--server", server.url, "--token", admin)
            records = Records(home / "conveyor.db")
            for n in range(rounds + 1):
                version = f"p{n}"
                for name, text in {
                    "app.py": APP,
                    "VERSION": version,
                    "HEALTHY": "yes",
                    "conveyor.yml": conveyor_yml().replace('EXPECT: ""', f"EXPECT: {version}"),
                }.items():
                    (work / name).write_text(text)
                git(work, "add", "-A")
                git(work, "commit", "-qm", version)
                since = records.last_event_id()
                push_at = time.time()
                git(work, "push", "-q", "origin", "main")
                release_id = _wait_release(records, since)
                production = _wait_production(records, release_id)
                events = records.events(since)
                bundle = home / "releases" / SERVICE / str(release_id)
                bundle_ready = bundle.stat().st_ctime
                if n == 0:
                    url = records.env_url("production")
                    assert url is not None
                    poller = Poller(int(url.rsplit(":", 1)[1]), root / "poller.log")
                    continue
                if production["status"] != "succeeded":
                    raise RuntimeError(f"{version}: production {production['status']}")
                row = _phases(release_id, events, records, bundle_ready)
                created = event_ts(events, "release.created", release=release_id)
                assert poller is not None
                answered.append(_first_answer(poller, version, created) - created)
                pushed.append(created - push_at)
                rows.append(row)
        finally:
            if poller is not None:
                poller.stop()
            server.stop()
            stop_release_processes(home)

    def med(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    keys = list(rows[0])
    return {
        "rounds": rounds,
        "load_average_at_start": load,
        "median_ms": {k: med([r[k] for r in rows]) for k in keys},
        "max_ms": {k: round(max(r[k] for r in rows) * 1000, 1) for k in keys},
        "created_to_production_answers": {
            "median_ms": med(answered),
            "max_ms": round(max(answered) * 1000, 1),
        },
        "push_to_release_created_ms": med(pushed),
    }


def _first_answer(poller: Poller, version: str, after: float) -> float:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for t, v in poller.seen():
            if t >= after and v == version:
                return t
        time.sleep(0.02)
    raise RuntimeError(f"production never answered {version}")


def _wait_release(records: Records, since: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in records.events(since):
            if ev["type"] == "release.created":
                return int(ev["release"])
            if ev["type"] == "pipelinerun.finished" and ev.get("status") == "failed":
                raise RuntimeError(f"the run failed: {ev}")
        time.sleep(0.02)
    raise RuntimeError("no release within 60 s of the push")


def _wait_production(records: Records, release_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = records.deployments(release_id=release_id)
        for dep in deps:
            if dep["status"] in ("failed", "rolled_back", "cancelled"):
                raise RuntimeError(f"deployment {dep['id']} {dep['status']}: {dep['reason']}")
        done = [d for d in deps if d["environment"] == "production" and d["status"] == "succeeded"]
        if done:
            return done[0]
        time.sleep(0.02)
    raise RuntimeError(f"release {release_id} did not reach production in {timeout:g} s")


def table(r: dict[str, Any]) -> str:
    med, top = r["median_ms"], r["max_ms"]
    lines = ["| phase | median | max |", "|---|---|---|"]
    for key, label in PHASES:
        lines.append(f"| {label} | {med[key]} ms | {top[key]} ms |")
    answers = r["created_to_production_answers"]
    lines += [
        f"| **release created → production serving** (environment.switched) | "
        f"**{med['created_to_production_serving']} ms** | "
        f"{top['created_to_production_serving']} ms |",
        f"| release created → production URL answers the new version (poller) | "
        f"{answers['median_ms']} ms | {answers['max_ms']} ms |",
        f"| release created → production deployment succeeded | "
        f"{med['created_to_production_succeeded']} ms | "
        f"{top['created_to_production_succeeded']} ms |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
    print(json.dumps(result, indent=2))
    print(table(result))
