"""Exactly once across servers (docs/decisions/0012-exactly-once.md), drilled with real
`conveyor server` and `conveyor runner` processes:

- three servers on one PostgreSQL database, every push announced to each of them (the same
  delivery id to all three, and a second id as a forge's copy would have): one run per commit,
  one release per commit, never a 5xx;
- a server whose clock runs ten minutes ahead (faketime) beside a normal one: no job is leased
  twice, no step starts twice;
- the git hook's POST racing the server's spool drain for the same deliveries: never a 500,
  each delivery recorded once;
- a runner agent with a step printing 20 MB (200 MB in bench/agent_log.py) under a short
  lease: the job finishes once and its log is stored once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests import pg
from tests.conftest import GitRepo
from tests.serverproc import (
    Process,
    Processes,
    clean_env,
    conveyor_argv,
    free_port,
    processes,
    until,
)

# The fixture of real server processes (tests/serverproc.py).
__all__ = ["processes"]

pytestmark = [pytest.mark.integration, pytest.mark.drill]

# Pushes in the three-server drill (bench/agent_log.py runs 500).
PUSHES = 100
# Lines of the agent's step: 200,000 lines of 100 bytes, 20 MB (the bench: 200 MB).
AGENT_LINES = 200_000
LINE = "x" * 99


def _commits(repo: GitRepo, count: int) -> list[tuple[str, str]]:
    """`count` new commits, each a child of the last: (parent, sha). `git commit-tree` keeps
    a hundred of them to a second."""
    parent = repo.git("rev-parse", "HEAD")
    tree = repo.git("rev-parse", "HEAD^{tree}")
    pairs = []
    for n in range(count):
        sha = repo.git("commit-tree", tree, "-p", parent, "-m", f"push {n}")
        pairs.append((parent, sha))
        parent = sha
    return pairs


class Fleet:
    """`conveyor server` processes sharing one PostgreSQL database, each with its own home."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.processes: list[Process] = []
        self.ports: list[int] = []
        self.home = tmp_path / "home-0"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            conveyor_argv(*args),
            env=clean_env(CONVEYOR_HOME=str(self.home), CONVEYOR_DATABASE_URL=self.url),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    def start(self, *, runners: int, **env: str) -> str:
        """Start one more server; returns its API base URL once it answers."""
        n = len(self.processes)
        home = self.tmp_path / f"home-{n}"
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = conveyor_argv(
            "server", "--port", str(port), "--runners", str(runners), "--log-level", "warning"
        )
        process = Process(
            argv,
            clean_env(CONVEYOR_HOME=str(home), CONVEYOR_DATABASE_URL=self.url, **env),
            self.tmp_path / "logs" / f"server-{n}",
            self.tmp_path,
        )
        self.processes.append(process)
        self.ports.append(port)
        base = f"http://127.0.0.1:{port}/api/v1"

        def healthy() -> bool:
            if not process.alive():
                raise AssertionError(f"server {n} exited:\n{process.stderr()}")
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until(healthy, 30, f"server {n} to answer")
        return base

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@contextmanager
def _database() -> Iterator[tuple[str, Any]]:
    with pg.fresh_database(pg.admin_url()) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield url, engine
        finally:
            engine.dispose()


def _scalar(engine: Any, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


@pytest.mark.postgres
def test_three_servers_on_postgres_run_each_pushed_commit_once(
    tmp_path: Path, repo: GitRepo
) -> None:
    repo.commit("pipeline", {"conveyor.yml": 'service: fleet\njobs:\n  build:\n    run: "true"\n'})
    pushes = _commits(repo, PUSHES)
    with _database() as (url, engine):
        fleet = Fleet(tmp_path, url)
        fleet.cli("service", "add", "fleet", "--repo", str(repo.path))
        token = fleet.cli("token", "create", "hooks", "--scope", "admin").splitlines()[0]
        try:
            bases = [fleet.start(runners=2) for _ in range(3)]
            clients = [
                httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                for base in bases
            ]

            def announce(n: int) -> list[int]:
                """Push n: the hook's delivery to every server (a retry finding another
                server), and a second delivery of the same push (a forge's copy)."""
                before, after = pushes[n]
                body = {
                    "repository": str(repo.path),
                    "ref": f"refs/heads/push-{n}",
                    "before": before,
                    "after": after,
                    "delivery": f"hook-{n}",
                }
                codes = [c.post("/hooks/git", json=body).status_code for c in clients]
                other = clients[n % 3].post("/hooks/git", json=body | {"delivery": f"copy-{n}"})
                return [*codes, other.status_code]

            with ThreadPoolExecutor(12) as pool:
                codes = [code for answer in pool.map(announce, range(PUSHES)) for code in answer]

            def settled() -> bool:
                waiting = _scalar(
                    engine,
                    "SELECT count(*) FROM deliveries WHERE status IN ('received', 'claimed')",
                )
                busy = _scalar(
                    engine,
                    "SELECT count(*) FROM runs WHERE status NOT IN "
                    "('succeeded', 'failed', 'cancelled', 'interrupted')",
                )
                return waiting == 0 and busy == 0

            until(settled, 120, "every delivery processed and every run finished")
        finally:
            for client in locals().get("clients", []):
                client.close()
            fleet.stop()
        runs = _rows(engine, "SELECT sha, count(*) FROM runs GROUP BY sha")
        releases = _rows(engine, "SELECT sha, count(*) FROM releases GROUP BY sha")
        deployments = _rows(
            engine,
            "SELECT r.sha, d.environment, count(*) FROM deployments d "
            "JOIN releases r ON r.id = d.release_id GROUP BY r.sha, d.environment",
        )
        deliveries = _scalar(engine, "SELECT count(*) FROM deliveries")
    assert not [c for c in codes if c >= 500], sorted(set(codes))
    assert set(codes) <= {200, 202}
    assert deliveries == 2 * PUSHES  # hook-n once however many servers heard it, copy-n once
    assert len(runs) == PUSHES  # runs == distinct commits pushed
    assert {count for _, count in runs} == {1}
    assert len(releases) == PUSHES
    assert {count for _, count in releases} == {1}
    assert all(count <= 1 for *_, count in deployments)


def _faketime() -> dict[str, str]:
    """What `faketime -f +10m` sets, given to the server itself: the faketime wrapper is a
    process of its own that a SIGTERM to it would not pass on to the server."""
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if shutil.which("faketime") is None or not libraries:
        if pg.in_ci():
            pytest.fail("faketime is not installed (.ci/run installs it)", pytrace=False)
        pytest.skip("faketime is not installed: apt-get install -y faketime")
    return {"LD_PRELOAD": str(libraries[0]), "FAKETIME": "+10m"}


@pytest.mark.postgres
def test_a_server_with_its_clock_ten_minutes_ahead_leases_no_job_twice(
    tmp_path: Path, repo: GitRepo
) -> None:
    faketime = _faketime()
    ahead = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **faketime},
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(ahead.stdout) - time.time() > 590  # the skewed server's clock, as it sees it
    jobs = 4
    pipeline = "service: skew\njobs:\n" + "".join(
        f"  j{n}:\n    run: sleep 2 && echo done\n" for n in range(jobs)
    )
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    with _database() as (url, engine):
        fleet = Fleet(tmp_path, url)
        fleet.cli("service", "add", "skew", "--repo", str(repo.path))
        token = fleet.cli("token", "create", "ci", "--scope", "admin").splitlines()[0]
        try:
            # Leases of 3 s: by its own clock the skewed server would find every lease
            # 10 minutes past its end and take the job away while its step runs.
            normal = fleet.start(runners=2, CONVEYOR_LEASE_SECONDS="3")
            fleet.start(runners=2, CONVEYOR_LEASE_SECONDS="3", **faketime)
            with httpx.Client(
                base_url=normal, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as client:
                run_ids = []
                for _ in range(2):
                    answer = client.post("/runs", json={"service": "skew"})
                    assert answer.status_code == 201, answer.text
                    run_ids.append(answer.json()["id"])

                def done() -> bool:
                    return all(
                        client.get(f"/runs/{r}").json()["status"] == "succeeded" for r in run_ids
                    )

                until(done, 60, "both runs to succeed")
        finally:
            fleet.stop()
        requeued = _scalar(engine, "SELECT count(*) FROM events WHERE type = 'taskrun.requeued'")
        starts = _scalar(engine, "SELECT count(*) FROM events WHERE type = 'step.started'")
        tokens = _rows(engine, "SELECT lease_token, runner FROM jobs")
    assert requeued == 0
    assert starts == 2 * jobs  # each step started once
    assert {t for t, _ in tokens} == {1}  # each job leased once


def _spool_change(directory: Path, n: int, before: str, after: str) -> dict[str, Any]:
    change = {
        "ref": f"refs/heads/race-{n}",
        "before": before,
        "after": after,
        "delivery": f"race-{n}",
        "pusher": "drill",
    }
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{n:05d}.json.tmp"
    tmp.write_text(json.dumps(change))
    tmp.rename(directory / f"{n:05d}-race.json")
    return change


@pytest.mark.postgres
def test_the_hooks_post_racing_the_spool_drain_is_never_a_500(
    tmp_path: Path, repo: GitRepo
) -> None:
    """The hook spools a change, then posts it; the server drains spools every second. Both
    record the same delivery id at the same moment: one records it, the other hears 200."""
    repo.commit("pipeline", {"conveyor.yml": 'service: race\njobs:\n  build:\n    run: "true"\n'})
    count = 60
    pushes = _commits(repo, count)
    spool = repo.path / ".git" / "conveyor-spool"
    with _database() as (url, engine):
        fleet = Fleet(tmp_path, url)
        fleet.cli("service", "add", "race", "--repo", str(repo.path))
        token = fleet.cli("token", "create", "hook", "--scope", "admin").splitlines()[0]
        try:
            # Two drains race too. No runners: what counts is the runs queued, not run.
            bases = [fleet.start(runners=0), fleet.start(runners=0)]

            def hook(n: int) -> int:
                before, after = pushes[n]
                change = _spool_change(spool, n, before, after)
                body = {"repository": str(repo.path), **change}
                with httpx.Client(
                    base_url=bases[n % 2],
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ) as client:
                    return client.post("/hooks/git", json=body).status_code

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(hook, range(count)))

            def settled() -> bool:
                waiting = _scalar(
                    engine,
                    "SELECT count(*) FROM deliveries WHERE status IN ('received', 'claimed')",
                )
                return not list(spool.glob("*.json")) and waiting == 0

            until(settled, 60, "the spool drained and every delivery processed")
        finally:
            fleet.stop()
        deliveries = _scalar(engine, "SELECT count(*) FROM deliveries")
        runs = _rows(engine, "SELECT sha, count(*) FROM runs GROUP BY sha")
        errors = [p.stderr() for p in fleet.processes if "Traceback" in p.stderr()]
    assert set(codes) <= {200, 202}, codes
    assert deliveries == count
    assert len(runs) == count
    assert {c for _, c in runs} == {1}
    assert not errors, errors[0][-2000:]


def test_an_agent_with_a_20_mb_step_finishes_it_once_and_stores_its_log_once(
    processes: Processes, repo: GitRepo
) -> None:
    """Leases of 2 s: the lease lives on heartbeats of its own while the log is delivered."""
    pipeline = (
        "service: loud\njobs:\n  build:\n    runs_on: [agent]\n"
        f"    run: awk 'BEGIN {{ for (i = 0; i < {AGENT_LINES}; i++) print \"{LINE}\" }}'\n"
    )
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    server = processes.server(lease_seconds=2)
    server.add_service("loud", repo.path)
    token = server.token("agents", "runner")
    agent = processes.agent(server, token, "loud-agent", "agent")
    run_id = server.trigger("loud")["id"]
    final = server.wait_run(run_id, 50)
    agent.stop()
    assert final["status"] == "succeeded", final
    lines, distinct = server.query(
        "SELECT count(*), count(DISTINCT seq) FROM log_lines WHERE step_position IS NOT NULL"
    )[0]
    assert lines == distinct == AGENT_LINES  # stored once: no line twice, none lost
    assert len(server.events(run_id, "taskrun.requeued")) == 0
    assert len(server.events(run_id, "step.started")) == 1
    assert "IllegalTransition" not in agent.stderr() + server.process.stderr()  # type: ignore[union-attr]
