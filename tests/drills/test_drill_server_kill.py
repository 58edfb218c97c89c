"""kill -9 of a `conveyor server` whose built-in runner is in the middle of a run: after the
restart the run ends clearly (its job leased again and run from the start, as decision 0005
says), no step is left running twice, nothing is duplicated and the store is intact.

The other kill -9 drills live with their subjects: a remote agent killed mid-job and the server
killed while an agent works (tests/server/test_server_agent.py), the server killed mid-deployment
(tests/delivery/test_delivery_drill.py), `conveyor run` killed (tests/engine)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GitRepo
from tests.serverproc import ServerProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # The step meets its gate and writes its count outside its workspace: unsandboxed.
    srv = ServerProcess(tmp_path / "home", runners=1, lease_seconds=2, sandbox=False)
    srv.admin = srv.token("admin", "admin")
    try:
        yield srv
    finally:
        srv.stop()


def test_kill_9_of_the_server_mid_run_re_runs_the_job_once_after_the_restart(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    gate, starts, done = tmp_path / "gate", tmp_path / "starts", tmp_path / "done"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""\
service: drill
jobs:
  build:
    run: echo built
  slow:
    needs: [build]
    steps:
      - name: wait
        run: |
          echo "$$" >> "{starts}"
          for i in $(seq 400); do [ -e "{gate}" ] && break; sleep 0.05; done
          [ -e "{gate}" ] && echo once >> "{done}"
      - name: after
        run: echo after
"""
        },
    )
    server.add_service("drill", repo.path)
    server.start()
    run_id = server.trigger("drill")["id"]
    until(lambda: len(lines(starts)) == 1, 20, "the step to start")
    [first_pid] = map(int, lines(starts))

    server.kill9()
    server.start()
    # The killed runner's step must not go on by itself: only one may ever pass the gate.
    until(lambda: len(lines(starts)) == 2, 20, "the job to be leased again and its step to start")
    until(lambda: not alive(first_pid), 10, "the orphaned step of the killed server to be gone")
    gate.touch()
    final = server.wait_run(run_id, 20)

    assert final["status"] == "succeeded", final
    assert lines(done) == ["once"]
    jobs = {j["name"]: j for j in final["jobs"]}
    assert [(s["name"], s["status"]) for s in jobs["slow"]["steps"]] == [
        ("wait", "succeeded"),
        ("after", "succeeded"),
    ]
    assert len(server.events(run_id, "taskrun.requeued")) == 1
    finished = Counter(e["job_id"] for e in server.events(run_id, "taskrun.finished"))
    assert sorted(finished.values()) == [1, 1]  # each job finished once
    assert len(server.events(run_id, "pipelinerun.finished")) == 1
    seqs = [line["seq"] for line in server.logs(run_id, "slow")]
    assert seqs == list(range(1, len(seqs) + 1))
    with contextlib.closing(sqlite3.connect(server.home / "conveyor.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
