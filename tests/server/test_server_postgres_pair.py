"""Two `conveyor server` processes on one PostgreSQL database share the work: every job of
every run is executed exactly once, by one of them, and both take part."""

from __future__ import annotations

import collections
from pathlib import Path

import httpx
import pytest
from tests import pg
from tests.conftest import GitRepo
from tests.serverproc import UNSANDBOXED, Process, clean_env, conveyor_argv, free_port, until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RUNS = 12


def _server(home: Path, url: str, port: int, name: str) -> Process:
    home.mkdir(parents=True, exist_ok=True)
    # Every job appends to one ledger outside the workspaces: unsandboxed.
    env = clean_env(CONVEYOR_HOME=str(home), CONVEYOR_DATABASE_URL=url, **UNSANDBOXED)
    return Process(
        conveyor_argv("server", "--port", str(port), "--runners", "2", "--log-level", "warning"),
        env,
        home.parent / "logs" / name,
        home.parent,
    )


def _cli(home: Path, url: str, *args: str) -> str:
    import subprocess

    out = subprocess.run(
        conveyor_argv(*args),
        env=clean_env(CONVEYOR_HOME=str(home), CONVEYOR_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_two_servers_on_one_database_run_each_job_once(tmp_path: Path, repo: GitRepo) -> None:
    ledger = tmp_path / "ledger"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shared
            jobs:
              a:
                run: echo "$CONVEYOR_RUN_ID a" >> {ledger}
              b:
                run: echo "$CONVEYOR_RUN_ID b" >> {ledger}
              c:
                needs: [a, b]
                run: echo "$CONVEYOR_RUN_ID c" >> {ledger}
            """
        },
    )
    with pg.fresh_database(pg.admin_url()) as url:
        first_home, second_home = tmp_path / "one", tmp_path / "two"
        _cli(first_home, url, "service", "add", "shared", "--repo", str(repo.path))
        token = _cli(first_home, url, "token", "create", "ci", "--scope", "admin").splitlines()[0]
        ports = [free_port(), free_port()]
        servers = [
            _server(first_home, url, ports[0], "one"),
            _server(second_home, url, ports[1], "two"),
        ]
        clients = [
            httpx.Client(
                base_url=f"http://127.0.0.1:{p}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            for p in ports
        ]
        try:
            for client, server in zip(clients, servers, strict=True):
                until(lambda c=client, s=server: s.alive() and _healthy(c), 30, "server start")
            run_ids = []
            for n in range(RUNS):
                answer = clients[n % 2].post("/runs", json={"service": "shared"})
                assert answer.status_code == 201, answer.text
                run_ids.append(answer.json()["id"])

            def all_done() -> bool:
                runs = clients[0].get("/runs", params={"limit": RUNS}).json()
                return len(runs) == RUNS and all(r["status"] == "succeeded" for r in runs)

            until(all_done, 90, "every run to succeed")
            runners = collections.Counter(
                job["runner"]
                for run_id in run_ids
                for job in clients[1].get(f"/runs/{run_id}").json()["jobs"]
            )
        finally:
            for client in clients:
                client.close()
            for server in servers:
                server.stop()
    executed = collections.Counter(ledger.read_text().split("\n")[:-1])
    expected = {f"{run_id} {job}" for run_id in run_ids for job in "abc"}
    assert set(executed) == expected
    assert set(executed.values()) == {1}  # no job ran twice
    assert len(runners) == 2  # both servers' runners took jobs
    assert sum(runners.values()) == RUNS * 3


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False
