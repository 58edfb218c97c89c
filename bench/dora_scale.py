"""DORA at scale: `conveyor dora` over 1,000,000 deployments and ~5,000,000 commits (design §7:
≤ 2 s on SQLite), and the speed of `conveyor import`.

The data set is generated (seeded, so every run builds the same one) straight into a fresh
store under bench/.cache/dora_scale (reused while its VERSION matches): 200 services over two
years (2024-01-01 → 2026-01-01), a quarter of them deployed to two production environments
(`production`, `production-eu`: each commit is in the range of both). Per deployment: 3 % fail
their check, 2 % are rolled back (each followed by a rollback deployment), 1 % are marked as
fixing an incident; incidents ~2 % of deployments (half of the rolled-back deployments, 1 % of
the healthy ones by window, some explicit, some standalone). Commit ranges as the controller
writes them: a failed deployment's commits come again with the next success. 70 % of the
services are Conveyor's own (`c<n>` keys, stage points for the lead-time split, first-seen
times), the others imported (`i:<service>:<id>`, no stage points).

Measured: the real CLI (`python -m conveyor dora --json`, a fresh process as a person runs it),
median of REPEATS wall times, over everything (`--from 2024-01-01 --to 2026-01-01`) and over
`--since 90d --to 2026-01-01`; its peak memory (max RSS). Then `conveyor import` of a generated
100,000-record JSON Lines file (deployments with their commits, incidents) into a fresh store:
records per second of wall time, and as the import reports itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "dora_scale"
VERSION = "4"  # bump when the generated data (or the schema it is written in) changes
SEED = 20261126
SERVICES = 200
DEPLOYMENTS = 1_000_000
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NEW_COMMITS = 4.83  # mean new commits per release (tuned for ~5,000,000 change rows)
P_FAILED, P_ROLLED_BACK, P_FIXES = 0.03, 0.02, 0.01
P_INCIDENT_ROLLED_BACK, P_INCIDENT_OK, P_INCIDENT_ALONE = 0.5, 0.01, 0.003
REPEATS = 3
IMPORT_RECORDS = 100_000
RUNS = {
    "all": ["--from", "2024-01-01", "--to", "2026-01-01"],
    "90d": ["--since", "90d", "--to", "2026-01-01"],
}

_EPOCH0 = int(START.timestamp())
_SPAN = int(END.timestamp()) - _EPOCH0
_DAY: dict[int, str] = {}


def _ts(t: float) -> str:
    """Epoch seconds as SQLAlchemy writes a datetime into SQLite ("YYYY-MM-DD HH:MM:SS.ffffff")."""
    s = int(t)
    us = int((t - s) * 1e6)
    d, r = divmod(s, 86400)
    day = _DAY.get(d)
    if day is None:
        day = _DAY[d] = (dt.date(1970, 1, 1) + dt.timedelta(days=d)).isoformat()
    h, r = divmod(r, 3600)
    m, sec = divmod(r, 60)
    return f"{day} {h:02d}:{m:02d}:{sec:02d}.{us:06d}"


def _iso(t: float) -> str:
    return _ts(t).replace(" ", "T") + "+00:00"


def _rfc3339(t: float) -> str:
    return _ts(t).replace(" ", "T")[:19] + "Z"


class _Gen:
    """The data set, one service at a time (rows for deployment_facts, change_facts and
    incidents), from one seeded generator."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)  # noqa: S311 (a benchmark's data, not a secret)
        self.fact_id = 0
        self.change_id = 0
        self.own_id = 0
        self.incident_id = 0

    def sha(self) -> str:
        return f"{self.rng.getrandbits(160):040x}"

    def commits(self, t: float, own: bool) -> list[tuple[str, float, float | None, float | None]]:
        rng = self.rng
        n = 1 + int(rng.expovariate(1 / (NEW_COMMITS - 0.5)))
        out = []
        for _ in range(n):
            committed = t - math.exp(rng.gauss(10.0, 1.3))  # median 6 h before the release
            authored = committed if rng.random() < 0.5 else committed - math.exp(rng.gauss(8, 1.5))
            seen = committed + rng.uniform(20, 300) if own else None
            out.append((self.sha(), committed, authored, seen))
        return out

    def service(self, s: int, service_id: int) -> tuple[list[tuple[Any, ...]], ...]:
        rng = self.rng
        name = f"svc-{s:03d}"
        own = s % 10 < 7
        envs = ["production", "production-eu"] if s % 4 == 0 else ["production"]
        quota = DEPLOYMENTS // SERVICES
        releases = quota / (len(envs) * (1 + P_ROLLED_BACK))
        pending: dict[str, list[tuple[str, float, float | None, float | None]]] = {
            e: [] for e in envs
        }
        live_sha = dict.fromkeys(envs, self.sha())
        facts: list[tuple[Any, ...]] = []
        changes: list[tuple[Any, ...]] = []
        incidents: list[tuple[Any, ...]] = []
        imported = 0

        def fact(
            kind: str,
            result: str,
            env: str,
            sha: str,
            started: float,
            finished: float,
            failed: float | None = None,
            rollback_of: str | None = None,
            fixes: bool = False,
            stages: str = "{}",
        ) -> str:
            nonlocal imported
            self.fact_id += 1
            if own:
                self.own_id += 1
                key, dep_id, source = f"c{self.own_id}", self.own_id, "conveyor"
            else:
                imported += 1
                key, dep_id, source = f"i:{name}:{imported}", None, "import"
            facts.append(
                (
                    self.fact_id,
                    key,
                    source,
                    name,
                    env,
                    "production",
                    kind,
                    result,
                    sha,
                    _ts(started),
                    _ts(finished),
                    None if failed is None else _ts(failed),
                    rollback_of,
                    int(fixes),
                    stages,
                    dep_id,
                )
            )
            return key

        def incident(
            opened: float, resolved: float | None, env: str | None, key: str | None
        ) -> None:
            self.incident_id += 1
            data = json.dumps({"deployment_key": key}) if key else "{}"
            incidents.append(
                (
                    self.incident_id,
                    service_id,
                    env,
                    "resolved" if resolved is not None else "open",
                    f"incident {self.incident_id}",
                    "alertmanager" if own else "import",
                    None,
                    None,
                    f"fp{self.incident_id}",
                    None if own else f"{name}:{self.incident_id}",
                    _ts(opened),
                    None if resolved is None else _ts(resolved),
                    None,
                    data,
                )
            )

        count, i = 0, 0
        while count < quota:
            t = _EPOCH0 + _SPAN * (i + rng.random()) / releases
            t = min(t, _EPOCH0 + _SPAN - 7200)
            i += 1
            new = self.commits(t, own)
            head = new[0][0]
            for k, env in enumerate(envs):
                if count >= quota:
                    break
                pending[env] += new
                started = t + k * 2400 + rng.uniform(0, 300)
                finished = started + rng.uniform(120, 900)
                stages = "{}"
                if own:
                    run_started = t - rng.uniform(900, 2400)
                    run_finished = run_started + rng.uniform(240, 840)
                    points = {
                        "run_started": _iso(run_started),
                        "run_finished": _iso(run_finished),
                        "staging_finished": _iso(min(started, run_finished + rng.uniform(60, 600))),
                    }
                    stages = json.dumps(points)
                r = rng.random()
                result = (
                    "failed"
                    if r < P_FAILED
                    else "rolled_back"
                    if r < P_FAILED + P_ROLLED_BACK
                    else "succeeded"
                )
                failed = None
                if result == "failed":
                    failed = started + (finished - started) * 0.8
                elif result == "rolled_back":
                    failed = finished + rng.uniform(120, 1800)
                fixes = rng.random() < P_FIXES
                key = fact(
                    "deploy", result, env, head, started, finished, failed, None, fixes, stages
                )
                count += 1
                for sha, committed, authored, seen in pending[env]:
                    self.change_id += 1
                    changes.append(
                        (
                            self.change_id,
                            self.fact_id,
                            sha,
                            _ts(committed),
                            None if authored is None else _ts(authored),
                            None if seen is None else _ts(seen),
                        )
                    )
                if result == "succeeded":
                    pending[env] = []
                    live_sha[env] = head
                    if rng.random() < P_INCIDENT_OK:
                        opened = finished + rng.uniform(600, 30 * 3600)
                        incident(opened, opened + rng.uniform(1200, 4 * 3600), env, None)
                elif result == "rolled_back" and failed is not None:
                    rb_start = failed + rng.uniform(30, 300)
                    rb_end = rb_start + rng.uniform(60, 300)
                    if count < quota:
                        fact(
                            "rollback", "succeeded", env, live_sha[env], rb_start, rb_end, None, key
                        )
                        count += 1
                    if rng.random() < P_INCIDENT_ROLLED_BACK:
                        explicit = key if rng.random() < 0.5 else None
                        opened = finished + (failed - finished) * rng.random()
                        incident(opened, rb_end + rng.uniform(60, 1800), env, explicit)
                if rng.random() < P_INCIDENT_ALONE:
                    opened = _EPOCH0 + rng.random() * _SPAN
                    resolved = opened + rng.uniform(600, 6 * 3600)
                    incident(opened, resolved, rng.choice([None, envs[0]]), None)
        return facts, changes, incidents


def _store(home: Path) -> Path:
    """A new, empty store at the current schema, made by Conveyor itself."""
    code = (
        "import sys; from pathlib import Path; "
        "from conveyor.store.db import Settings, open_store; "
        "open_store(Settings.resolve(Path(sys.argv[1]))).close()"
    )
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, env=_env(home))
    return home / "conveyor.db"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_HOME"] = str(home)
    return env


def dataset() -> tuple[Path, dict[str, Any]]:
    """The store of the data set: reused if built by this VERSION, else built (a few minutes)."""
    home = CACHE / "home"
    stamp = CACHE / "VERSION.json"
    if stamp.exists():
        found: dict[str, Any] = json.loads(stamp.read_text())
        if found.get("version") == VERSION and (home / "conveyor.db").exists():
            return home, found
    if home.exists():
        for p in home.iterdir():
            p.unlink()
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    started = time.monotonic()
    db = _store(home)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    gen = _Gen()
    counts = {"deployments": 0, "commits": 0, "incidents": 0}
    for s in range(SERVICES):
        conn.execute(
            "INSERT INTO services (id, name, repository, created_at, allow_unsigned, poll_state)"
            " VALUES (?, ?, ?, ?, 0, '{}')",
            (s + 1, f"svc-{s:03d}", f"imported://svc-{s:03d}", _ts(_EPOCH0 - 86400)),
        )
        facts, changes, incidents = gen.service(s, s + 1)
        conn.executemany(
            "INSERT INTO deployment_facts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            facts,
        )
        conn.executemany("INSERT INTO change_facts VALUES (?, ?, ?, ?, ?, ?)", changes)
        conn.executemany(
            "INSERT INTO incidents (id, service_id, environment, status, title, source,"
            " deployment_id, release_id, fingerprint, external_id, opened_at, resolved_at,"
            " resolved_by, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            incidents,
        )
        counts["deployments"] += len(facts)
        counts["commits"] += len(changes)
        counts["incidents"] += len(incidents)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    info = {
        "version": VERSION,
        **counts,
        "services": SERVICES,
        "build_seconds": round(time.monotonic() - started, 1),
        "db_mib": round(db.stat().st_size / 2**20),
    }
    stamp.write_text(json.dumps(info, indent=2))
    return home, info


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS (MiB) and standard output of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.decode()[-2000:]}")
    # ru_maxrss of the children so far: the largest child wins, runs go smallest first.
    import resource

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, rss, out


def _forget_summary(home: Path) -> None:
    """Drop the DORA summary, so the first report builds it as after an upgrade or import."""
    conn = sqlite3.connect(home / "conveyor.db", isolation_level=None)
    for table in ("dora_days", "dora_summaries", "dora_marks"):
        conn.execute(f"DELETE FROM {table}")  # noqa: S608 (constant names)
    conn.close()


def measure_dora(home: Path) -> dict[str, Any]:
    env = _env(home)
    base = [sys.executable, "-m", "conveyor", "dora", "--json"]
    out: dict[str, Any] = {"load_average_at_start": round(os.getloadavg()[0], 1)}
    _forget_summary(home)
    wall, rss, _ = _run([*base, *RUNS["all"]], env)
    out["first"] = {"wall_s": round(wall, 1), "max_rss_mib": round(rss)}
    _run([*base, *RUNS["90d"]], env)  # warm-up: page cache, bytecode
    for name in ("90d", "all"):
        walls, rss, digest, report = [], 0.0, "", {}
        for _ in range(REPEATS):
            wall, peak, stdout = _run([*base, *RUNS[name]], env)
            walls.append(wall)
            rss = max(rss, peak)
            digest = hashlib.sha256(stdout).hexdigest()[:16]
            report = json.loads(stdout)
        m = report["metrics"]
        out[name] = {
            "args": " ".join(RUNS[name]),
            "wall_s": round(statistics.median(walls), 3),
            "walls_s": [round(w, 3) for w in walls],
            "max_rss_mib": round(rss),
            "deployments": m["deployment_frequency"]["count"],
            "commits": m["lead_time"]["sample_size"],
            "lead_time_median_s": m["lead_time"]["value"],
            "change_failure_rate": m["change_failure_rate"]["value"],
            "failures": m["recovery_time"]["failures"],
            "output_sha256": digest,
        }
    # One more deployment, imported (as a pipeline's would be recorded): the next report
    # takes it in (re-tallies that service's last days) before adding days up.
    walls = []
    for i in range(REPEATS):
        record = {
            "kind": "deployment",
            "service": "svc-000",
            "environment": "production",
            "id": f"bench-extra-{time.time_ns()}-{i}",
            "commit": f"{i:040x}",
            "started_at": "2025-12-31T11:50:00Z",
            "finished_at": "2025-12-31T12:00:00Z",
            "status": "succeeded",
            "commits": [{"sha": f"{i + 1:040x}", "committed_at": "2025-12-31T09:00:00Z"}],
        }
        line = home.parent / "extra.jsonl"
        line.write_text(json.dumps(record) + "\n")
        _run([sys.executable, "-m", "conveyor", "import", str(line)], env)
        walls.append(_run([*base, *RUNS["all"]], env)[0])
    out["after_one_more"] = {
        "wall_s": round(statistics.median(walls), 3),
        "walls_s": [round(w, 3) for w in walls],
    }
    started = time.perf_counter()
    subprocess.run([*base[:-1], "--help"], env=env, check=True, stdout=subprocess.DEVNULL)
    out["dora_help_s"] = round(time.perf_counter() - started, 3)
    return out


def import_lines(n: int = IMPORT_RECORDS) -> Iterator[str]:
    """A JSON Lines history of ``n`` records over 20 services in 2023: deployments with their
    commits (3 % failed, 2 % rolled back and undone), and incidents (2 %)."""
    rng = random.Random(SEED + 1)  # noqa: S311
    base = int(dt.datetime(2023, 1, 1, tzinfo=dt.UTC).timestamp())
    services = [f"imp-{i:02d}" for i in range(20)]
    ids = dict.fromkeys(services, 0)
    last = dict.fromkeys(services, "")
    t = float(base)
    written = 0
    while written < n:
        service = rng.choice(services)
        t += rng.expovariate(1 / 300)
        if rng.random() < 0.02 and last[service]:
            yield json.dumps(
                {
                    "kind": "incident",
                    "service": service,
                    "id": f"INC-{written}",
                    "opened_at": _rfc3339(t),
                    "resolved_at": _rfc3339(t + rng.uniform(600, 7200)),
                    "deployment": last[service] if rng.random() < 0.5 else None,
                }
            )
            written += 1
            continue
        ids[service] += 1
        did = f"d{ids[service]}"
        r = rng.random()
        status = "failed" if r < 0.03 else "rolled_back" if r < 0.05 else "succeeded"
        commits = [
            {
                "sha": f"{rng.getrandbits(160):040x}",
                "committed_at": _rfc3339(t - math.exp(rng.gauss(10.0, 1.3))),
            }
            for _ in range(1 + int(rng.expovariate(1 / 4)))
        ]
        record = {
            "kind": "deployment",
            "service": service,
            "environment": "production",
            "id": did,
            "commit": commits[0]["sha"],
            "started_at": _rfc3339(t - rng.uniform(120, 900)),
            "finished_at": _rfc3339(t),
            "status": status,
            "commits": commits,
        }
        yield json.dumps(record)
        written += 1
        last[service] = did
        if status == "rolled_back" and written < n:
            ids[service] += 1
            t += rng.uniform(60, 600)
            yield json.dumps(
                {
                    "kind": "deployment",
                    "service": service,
                    "environment": "production",
                    "id": f"d{ids[service]}",
                    "commit": f"{rng.getrandbits(160):040x}",
                    "started_at": _rfc3339(t - 60),
                    "finished_at": _rfc3339(t),
                    "status": "succeeded",
                    "rollback_of": did,
                    "commits": [],
                }
            )
            written += 1


def measure_import() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-import-") as tmp:
        root = Path(tmp)
        path = root / "history.jsonl"
        lines = list(import_lines())
        path.write_text("\n".join(lines) + "\n")
        walls, reported, summary = [], [], {}
        for i in range(REPEATS):
            home = root / f"home{i}"
            _store(home)
            argv = [sys.executable, "-m", "conveyor", "import", "--json", str(path)]
            wall, _, stdout = _run(argv, _env(home))
            summary = json.loads(stdout)
            walls.append(wall)
            reported.append(summary["seconds"])
        wall, own = statistics.median(walls), statistics.median(reported)
        return {
            "records": len(lines),
            "mib": round(path.stat().st_size / 2**20, 1),
            "deployments": summary["deployments"]["added"],
            "commits": summary["deployments"]["changes_added"],
            "incidents": summary["incidents"]["added"],
            "wall_s": round(wall, 2),
            "records_per_s": round(len(lines) / wall),
            "reported_s": round(own, 2),
            "records_per_s_reported": round(len(lines) / own),
        }


def measure() -> dict[str, Any]:
    home, info = dataset()
    return {"dataset": info, "dora": measure_dora(home), "import": measure_import()}


def section(r: dict[str, Any]) -> str:
    d, q, imp = r["dataset"], r["dora"], r["import"]
    a, n = q["all"], q["90d"]
    return f"""## DORA at scale (target ≤ 2 s over 1,000,000 deployments and 5,000,000 commits)

`conveyor dora --json` as a fresh process on SQLite, median of {REPEATS} runs (after the first
and a warm-up),
over a generated store (bench/dora_scale.py, seeded, cached under bench/.cache): \
{d["deployments"]:,} deployment facts, {d["commits"]:,} commits (change facts) and \
{d["incidents"]:,} incidents of {d["services"]} services over 2024–2025, all in the production
tier (a quarter of the services in two production environments); 3 % failed, 2 % rolled back,
incidents ~2 % of deployments. Each report also has its trend window (as long again, before).

| `conveyor dora --json …` | deployments / commits counted | wall time | runs | peak RSS |
|---|---|---|---|---|
| `{a["args"]}` (everything) | {a["deployments"]:,} / {a["commits"]:,} | **{a["wall_s"]} s** | \
{", ".join(map(str, a["walls_s"]))} s | {a["max_rss_mib"]} MiB |
| `{n["args"]}` | {n["deployments"]:,} / {n["commits"]:,} | **{n["wall_s"]} s** | \
{", ".join(map(str, n["walls_s"]))} s | {n["max_rss_mib"]} MiB |

Reports add up the DORA summary's per-day tallies (metrics.summary). The first report after
the summary is dropped (as after an upgrade) tallies every service once: \
**{q["first"]["wall_s"]} s** ({q["first"]["max_rss_mib"]} MiB). After one more deployment is \
imported, the next report over everything (which first re-tallies that service's last days): \
**{q["after_one_more"]["wall_s"]} s** ({", ".join(map(str, q["after_one_more"]["walls_s"]))} s).

`conveyor dora --help` (Python start-up, the CLI's imports): {q["dora_help_s"]} s. Load average
(1 min) at the start: {q.get("load_average_at_start", "?")} on {os.cpu_count()} cores.

`conveyor import --json` of a generated JSON Lines file ({imp["records"]:,} records, \
{imp["mib"]} MiB: {imp["deployments"]:,} deployments with {imp["commits"]:,} commits, \
{imp["incidents"]:,} incidents) into a fresh store, median of {REPEATS}: \
**{imp["records_per_s"]:,} records/s** ({imp["wall_s"]} s wall, process start included; \
{imp["records_per_s_reported"]:,} records/s by the import's own {imp["reported_s"]} s).
"""


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        print(json.dumps(dataset()[1], indent=2))
    else:
        print(json.dumps(measure(), indent=2))
