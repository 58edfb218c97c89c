"""DORA on a history Conveyor wrote itself, side by side with the imported million.

bench/dora_scale.py holds imported facts only: no runs, releases or deployments of Conveyor's
own, so it never met what a real history costs (work in progress read per release over every
deployment took 21.5 s at 10,000 runs and did not answer within 240 s at 50,000). This store is
written through the real tables, as the server writes them (SQLAlchemy Core inserts into
services, environments, runs, jobs, releases, deployments, approvals, incidents, deployment
facts and their commits, in a store Conveyor created): 20 services over two years
(2024-01-01 → 2026-01-01), RUNS runs each with one job and a release; one release in five
is promoted to staging and then, past an approval, to production (~20,000 deployments):
4 % fail their check, 3 % are rolled back (and a rollback deployment follows), 5 % are
rejected at the approval, 3 % superseded in the queue; incidents for half the rolled-back
deployments (named by deployment), for some releases (named by release) and some standalone.
A production deployment's commits are those of every release since the last success there.

Measured for each store, pinned to one core (os.sched_setaffinity): the 90-day report
(`--since 90d --to 2026-01-01`) after the summary is dropped (the first report tallies every
service, as after an upgrade) and repeated, through `GET /api/v1/dora` in-process
(httpx.ASGITransport on the real app) and through `conveyor dora --json` as a fresh process.

`python bench/dora_real.py [--quick]`: both stores (`--quick`: a 2,000-run real-table store,
no million), JSON on stdout. `--build N HOME`: only build a store of N runs under HOME (to
time older code on the same data).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dora_scale

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "dora_real"
VERSION = "2"
SEED = 20261207
SERVICES = 20
RUNS = 50_000
QUICK_RUNS = 2_000
PROMOTED = 5  # one release in PROMOTED goes to staging and production
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ARGS = ["--since", "90d", "--to", "2026-01-01"]
QUERY = "since=90d&to=2026-01-01"
REPEATS = 5
CLI_REPEATS = 3
# Production outcomes, cumulative: failed, rolled back, rejected, superseded, else succeeded.
OUTCOMES = (("failed", 0.04), ("rolled_back", 0.07), ("rejected", 0.12), ("superseded", 0.15))
MIN = dt.timedelta(minutes=1)
# The code before issue 15's rewrite (main at d250c2d) on this store of RUNS runs, built by
# `--build 50000` with that code on PYTHONPATH and measured by hand (it is gone from the tree):
# wall s (CPU s), one core for GET, on 2026-12-07 ~19:00 UTC, load average ~8-9 on 2 cores.
BEFORE = {
    "api_first": "34.4 s (10.9 s)",
    "api_repeated": "23.9 s (7.9 s)",
    "cli_first": "54.0 s (9.7 s)",
    "cli_repeated": "15.8 s (7.5 s)",
}


class _History:
    """Rows for each table, by table name, in insertion order (ids given, so rows can name
    each other without a round trip)."""

    def __init__(self, runs: int) -> None:
        self.rng = random.Random(SEED)  # noqa: S311 (a benchmark's data)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.runs = runs
        self.ids: dict[str, int] = {}

    def add(self, table: str, **row: Any) -> int:
        n = self.ids[table] = self.ids.get(table, 0) + 1
        self.rows.setdefault(table, []).append({"id": n, **row})
        return n

    def sha(self) -> str:
        return f"{self.rng.getrandbits(160):040x}"

    def build(self) -> dict[str, list[dict[str, Any]]]:
        per = self.runs // SERVICES
        for s in range(SERVICES):
            self.service(s, per)
        return self.rows

    def service(self, s: int, runs: int) -> None:
        rng, name = self.rng, f"svc-{s:02d}"
        sid = self.add(
            "services", name=name, repository=f"/srv/{name}", created_at=START, poll_state={}
        )
        span = (END - START).total_seconds()
        pending: dict[str, list[tuple[str, dt.datetime]]] = {"staging": [], "production": []}
        live: dict[str, int | None] = {"staging": None, "production": None}
        for i in range(runs):
            t = START + dt.timedelta(seconds=span * (i + rng.random()) / runs)
            commits = [(self.sha(), t - dt.timedelta(hours=rng.uniform(0.2, 30))) for _ in "ab"]
            run = self.add(
                "runs",
                service_id=sid,
                status="succeeded",
                sha=commits[0][0],
                ref="refs/heads/main",
                trigger="push",
                commit={},
                pipeline={},
                created_at=t - 12 * MIN,
                started_at=t - 10 * MIN,
                finished_at=t,
                cancel_requested=False,
            )
            self.add(
                "jobs",
                run_id=run,
                name="build",
                position=0,
                status="succeeded",
                needs=[],
                config={},
                started_at=t - 10 * MIN,
                finished_at=t,
                lease_token=1,
                report_seq=1,
                log_bytes=0,
                log_dropped=0,
            )
            rid = self.add(
                "releases",
                service_id=sid,
                run_id=run,
                sha=commits[0][0],
                ref="refs/heads/main",
                created_at=t,
                evidence={},
                publication={"status": "none"},
            )
            for env in pending:
                pending[env] += commits
            # The last days are in flight: the last releases not yet promoted to production,
            # the very last not deployed at all (work in progress).
            if i % PROMOTED != PROMOTED - 1 or t > END - dt.timedelta(hours=12):
                continue
            stages = {"run_started": t - 10 * MIN, "run_finished": t}
            staged = t + dt.timedelta(minutes=rng.uniform(5, 30))
            self.deploy(sid, name, rid, "staging", "succeeded", staged, pending, live, stages)
            stages["staging_finished"] = staged
            if t > END - dt.timedelta(days=4):
                continue
            roll, outcome = rng.random(), "succeeded"
            for what, below in OUTCOMES:
                if roll < below:
                    outcome = what
                    break
            done = staged + dt.timedelta(minutes=rng.uniform(20, 120))
            prod = self.deploy(sid, name, rid, "production", outcome, done, pending, live, stages)
            if outcome == "rolled_back":
                back = done + dt.timedelta(minutes=rng.uniform(2, 10))
                self.deploy(
                    sid, name, live["production"] or rid, "production", "succeeded", back,
                    pending, live, {}, rollback_of=prod,
                )  # fmt: skip
                if rng.random() < 0.5:
                    self.incident(sid, done + MIN, back + 5 * MIN, deployment_id=prod)
            elif outcome == "succeeded" and rng.random() < 0.01:
                opened = done + dt.timedelta(hours=rng.uniform(1, 20))
                self.incident(sid, opened, opened + dt.timedelta(hours=1), release_id=rid)
            if rng.random() < 0.005:
                opened = t + dt.timedelta(hours=rng.uniform(0, 48))
                self.incident(sid, opened, opened + dt.timedelta(hours=2), environment="production")
        for env, tier in (("staging", "staging"), ("production", "production")):
            self.add(
                "environments",
                service_id=sid,
                name=env,
                tier=tier,
                current_release_id=live[env],
                instance={},
                healthy=True,
                held=False,
                updated_at=END,
            )

    def deploy(
        self,
        sid: int,
        service: str,
        rid: int,
        env: str,
        status: str,
        done: dt.datetime,
        pending: dict[str, list[tuple[str, dt.datetime]]],
        live: dict[str, int | None],
        stages: dict[str, dt.datetime],
        rollback_of: int | None = None,
    ) -> int:
        """A deployment as the server leaves it, its approval (production), and for one that
        took place its DORA fact with the commits it brought."""
        started = done - dt.timedelta(minutes=self.rng.uniform(2, 8))
        took_place = status in ("succeeded", "failed", "rolled_back")
        failed = started + (done - started) * 0.8 if status in ("failed", "rolled_back") else None
        did = self.add(
            "deployments",
            service_id=sid,
            environment=env,
            tier=env,
            release_id=rid,
            kind="rollback" if rollback_of else "deploy",
            status=status,
            trigger="rollback" if rollback_of else "auto",
            previous_release_id=live[env],
            rollback_of=rollback_of,
            created_at=started - 5 * MIN,
            started_at=started if took_place else None,
            healthy_at=done if status == "succeeded" else None,
            failed_at=failed,
            finished_at=done,
            checks=[],
            log=[],
            instance={},
        )
        if env == "production" and not rollback_of:
            decision = {"rejected": "rejected", "superseded": "withdrawn"}.get(status, "approved")
            self.add(
                "approvals",
                deployment_id=did,
                kind="approval",
                status=decision,
                approvers=[],
                required=1,
                self_approval=False,
                excluded=[],
                on_timeout="reject",
                requested_at=started - 4 * MIN,
                decided_at=started - MIN,
            )
        if not took_place:
            return did
        changes = pending[env] if status == "succeeded" and not rollback_of else []
        fact = self.add(
            "deployment_facts",
            key=f"c{did}",
            source="conveyor",
            service=service,
            environment=env,
            tier=env,
            kind="rollback" if rollback_of else "deploy",
            result=status,
            sha="",
            started_at=started,
            finished_at=done,
            failed_at=failed,
            rollback_of=f"c{rollback_of}" if rollback_of else None,
            fixes_incident=False,
            stages={k: v.isoformat() for k, v in stages.items()},
            deployment_id=did,
        )
        for sha, committed in changes:
            self.add(
                "change_facts",
                fact_id=fact,
                sha=sha,
                committed_at=committed,
                authored_at=None,
                seen_at=None,
            )
        if status == "succeeded":
            pending[env] = []
            live[env] = rid
        return did

    def incident(self, sid: int, opened: dt.datetime, resolved: dt.datetime, **named: Any) -> None:
        n = self.ids.get("incidents", 0) + 1
        self.add(
            "incidents",
            service_id=sid,
            environment=named.pop("environment", "production"),
            status="resolved",
            title=f"incident {n}",
            source="alertmanager",
            deployment_id=named.get("deployment_id"),
            release_id=named.get("release_id"),
            fingerprint=f"fp{n}",
            opened_at=opened,
            resolved_at=resolved,
            resolved_by="restore",
            data={},
        )


def build(runs: int, home: Path) -> dict[str, Any]:
    """A store of ``runs`` runs under ``home``, created by Conveyor, its rows inserted into
    its tables (SQLAlchemy Core, in one transaction)."""
    from sqlalchemy import insert

    from conveyor.store.db import Settings, open_store
    from conveyor.store.models import Base

    home.mkdir(parents=True, exist_ok=True)
    for p in home.iterdir():
        p.unlink()
    started = time.monotonic()
    rows = _History(runs).build()
    store = open_store(Settings.resolve(home))
    try:
        with store.engine.begin() as conn:
            for table in Base.metadata.sorted_tables:
                found = rows.get(table.name, [])
                for i in range(0, len(found), 5000):
                    conn.execute(insert(table), found[i : i + 5000])
    finally:
        store.close()
    counts = {name: len(found) for name, found in sorted(rows.items())}
    return {"runs": runs, "rows": counts, "build_seconds": round(time.monotonic() - started, 1)}


def dataset(runs: int) -> tuple[Path, dict[str, Any]]:
    """The store of ``runs`` runs: reused if built by this VERSION, else built."""
    home = CACHE / f"home-{runs}"
    stamp = CACHE / f"VERSION-{runs}.json"
    if stamp.exists() and (home / "conveyor.db").exists():
        found: dict[str, Any] = json.loads(stamp.read_text())
        if found.get("version") == VERSION:
            return home, found
    info = {"version": VERSION, **build(runs, home)}
    info["db_mib"] = round((home / "conveyor.db").stat().st_size / 2**20)
    stamp.write_text(json.dumps(info, indent=2))
    return home, info


@contextmanager
def one_core() -> Iterator[int]:
    """This process (and what it starts) on one CPU meanwhile."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _api(home: Path) -> dict[str, Any]:
    """GET /api/v1/dora in this process, through the real app: the first (summary dropped: the
    server answers from the window's facts), then the server's background step that summarises
    the history (timed on its own), then REPEATS more."""
    import httpx

    from conveyor.server.app import create_app
    from conveyor.server.tokens import create_token
    from conveyor.store.db import Settings, open_store

    store = open_store(Settings.resolve(home))
    cpus: list[float] = []
    token = create_token(store, f"bench-{time.time_ns()}", ["read"])

    background: dict[str, float] = {}

    def summarise() -> None:
        from conveyor.metrics.summary import keep_current

        started, cpu = time.perf_counter(), time.process_time()
        keep_current(store)
        background["wall"] = time.perf_counter() - started
        background["cpu"] = time.process_time() - cpu

    async def main() -> list[float]:
        app = create_app(store)  # its lifespan (the background services) is not started
        walls = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://conveyor") as client:
            for i in range(1 + REPEATS):
                if i == 1:
                    summarise()
                started, cpu = time.perf_counter(), time.process_time()
                answer = await client.get(
                    f"/api/v1/dora?{QUERY}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=600,
                )
                walls.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu)
                answer.raise_for_status()
        return walls

    try:
        dora_scale._forget_summary(home)
        walls = asyncio.run(main())
    finally:
        store.close()
    return {
        "first_s": round(walls[0], 3),
        "repeated_s": round(statistics.median(walls[1:]), 3),
        "walls_s": [round(w, 3) for w in walls[1:]],
        "first_cpu_s": round(cpus[0], 3),
        "repeated_cpu_s": round(statistics.median(cpus[1:]), 3),
        "background_summary_s": round(background["wall"], 3),
        "background_summary_cpu_s": round(background["cpu"], 3),
    }


def _child_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _cli(home: Path) -> dict[str, Any]:
    """`conveyor dora --json` as a fresh process: the first on a store whose summary was
    dropped, which the command summarises; then the first after `conveyor db upgrade` (which
    summarises the history when an upgrade dropped the summary), then more."""
    env = dora_scale._env(home)
    argv = [sys.executable, "-m", "conveyor", "dora", "--json", *ARGS]
    dora_scale._forget_summary(home)
    cpu = _child_cpu()
    unsummarised, _, _ = dora_scale._run(argv, env)
    unsummarised_cpu = _child_cpu() - cpu
    dora_scale._forget_summary(home)
    cpu = _child_cpu()
    upgrade, _, _ = dora_scale._run([sys.executable, "-m", "conveyor", "db", "upgrade"], env)
    upgrade_cpu = _child_cpu() - cpu
    cpu = _child_cpu()
    first, _, _ = dora_scale._run(argv, env)
    first_cpu = _child_cpu() - cpu
    walls, cpus, out = [], [], b""
    for _ in range(CLI_REPEATS):
        cpu = _child_cpu()
        wall, _, out = dora_scale._run(argv, env)
        walls.append(wall)
        cpus.append(_child_cpu() - cpu)
    figures = json.loads(out)["metrics"]
    return {
        "unsummarised_s": round(unsummarised, 3),
        "unsummarised_cpu_s": round(unsummarised_cpu, 3),
        "db_upgrade_s": round(upgrade, 3),
        "db_upgrade_cpu_s": round(upgrade_cpu, 3),
        "first_s": round(first, 3),
        "repeated_s": round(statistics.median(walls), 3),
        "walls_s": [round(w, 3) for w in walls],
        "first_cpu_s": round(first_cpu, 3),
        "repeated_cpu_s": round(statistics.median(cpus), 3),
        "deployments": figures["deployment_frequency"]["count"],
        "commits": figures["lead_time"]["sample_size"],
        "work_in_progress": figures.get("work_in_progress", {}).get("value"),
    }


def measure_store(home: Path) -> dict[str, Any]:
    with one_core() as cpu:
        return {
            "cpu": cpu,
            "load_average_at_start": round(os.getloadavg()[0], 1),
            "api": _api(home),
            "cli": _cli(home),
        }


def measure(quick: bool = False) -> dict[str, Any]:
    home, info = dataset(QUICK_RUNS if quick else RUNS)
    out: dict[str, Any] = {"real": {"dataset": info, **measure_store(home)}}
    if not quick:
        million, about = dora_scale.dataset()
        out["imported"] = {"dataset": about, **measure_store(million)}
    return out


def section(r: dict[str, Any]) -> str:
    real = r["real"]
    rows = real["dataset"]["rows"]
    stores = [("real tables", real)]
    if "imported" in r:
        stores.append(("imported million", r["imported"]))

    def line(what: str, m: dict[str, Any]) -> str:
        a, c = m["api"], m["cli"]
        return (
            f"| {what} | {c['deployments']:,} / {c['commits']:,} | **{a['first_s']} s** "
            f"({a['first_cpu_s']} s) | {a['background_summary_s']} s "
            f"({a['background_summary_cpu_s']} s) | **{a['repeated_s']} s** "
            f"({a['repeated_cpu_s']} s) | {c['unsummarised_s']} s ({c['unsummarised_cpu_s']} s) "
            f"| {c['db_upgrade_s']} s ({c['db_upgrade_cpu_s']} s) | **{c['first_s']} s** "
            f"({c['first_cpu_s']} s) | **{c['repeated_s']} s** ({c['repeated_cpu_s']} s) | "
            f"{m['load_average_at_start']} |"
        )

    table = "\n".join(line(what, m) for what, m in stores)
    imported = r.get("imported", {}).get("dataset", {})
    title = "DORA on a history written through the real tables"
    target = "target ≤ 1 s for 90 days at 50,000 runs, one core"
    head = (
        "| store | deployments / commits counted | `GET /api/v1/dora` first | the server's "
        "background summary | `GET` repeated | `conveyor dora --json`, summary dropped | "
        "`conveyor db upgrade` | `conveyor dora` first after it | repeated | load (1 min) |"
    )
    return f"""## {title} ({target})

bench/dora_real.py: a store written as the server writes it — {rows.get("runs", 0):,} runs, \
{rows.get("jobs", 0):,} jobs, {rows.get("releases", 0):,} releases, \
{rows.get("deployments", 0):,} deployments, {rows.get("approvals", 0):,} approvals, \
{rows.get("incidents", 0):,} incidents, {rows.get("deployment_facts", 0):,} deployment facts and \
{rows.get("change_facts", 0):,} commits of {SERVICES} services over 2024–2025 (releases promoted \
to staging and production; failed, rolled back, rejected and superseded ones) — side by side \
with bench/dora_scale.py's imported store ({imported.get("deployments", 0):,} deployment facts, \
{imported.get("commits", 0):,} commits). The report `{" ".join(ARGS)}` (90 days and its trend \
window), pinned to one core, after the DORA summary is dropped (as an upgrade that changes \
the definitions does). The server answers the first report from the window's facts and leaves \
the summary to its background step (timed apart); a `conveyor dora` run on a store without \
the summary tallies every service itself, so `conveyor db upgrade` summarises the history \
when its upgrade dropped the summary; then the reports repeated (median of {REPEATS} \
in-process, {CLI_REPEATS} fresh processes).

{head}
|---|---|---|---|---|---|---|---|---|---|
{table}

Each figure is wall time, with the CPU time it used in brackets (this process's for `GET`, the
child's for `conveyor dora`): on a shared machine the CPU time is what one core's worth costs.
`GET` runs in-process on the real app (httpx.ASGITransport); `conveyor dora` is a fresh process
each time (Python start-up and imports included, ~0.4 s). Work in progress (a snapshot of now,
read at every report): {real["cli"]["work_in_progress"]:g} releases on the real-table store.
Before issue 15's rewrite, work in progress was read per release over the service's deployments
(a correlated subquery per release) and the incidents of a span by an OR no index could serve:
an outside check measured 21.5 s for `GET /dora` on 10,000 runs, and no answer within 240 s at
50,000. That code on this real-table store (measured by hand, see BEFORE in bench/dora_real.py):
`GET` first {BEFORE["api_first"]}, repeated {BEFORE["api_repeated"]}; `conveyor dora` first \
{BEFORE["cli_first"]}, repeated {BEFORE["cli_repeated"]}.
tests/metrics/test_dora_plans.py checks that every statement of a report uses an index.
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        print(json.dumps(build(int(sys.argv[2]), Path(sys.argv[3])), indent=2))
    else:
        print(json.dumps(measure(quick=sys.argv[1:] == ["--quick"]), indent=2))
