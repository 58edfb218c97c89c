"""Bounded storage with the real `conveyor` command: a job's log cap over all its steps, and
`conveyor db prune` applying CONVEYOR_LOG_RETENTION, CONVEYOR_ARTIFACT_RETENTION and
CONVEYOR_KEEP_BUNDLES (docs/decisions/0016-bounded-storage.md)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.serverproc import ServerProcess, until

STEPS = """
service: shop
defaults: { job_log_limit: 32KiB }
jobs:
  noisy:
    env: { PAD: "0123456789012345678901234567890123456789" }
    steps:
      - name: first
        run: for i in $(seq -w 0 399); do echo "first $i $PAD"; done
      - name: second
        run: for i in $(seq -w 0 399); do echo "second $i $PAD"; done
      - name: third
        run: echo third ran
"""

ARTIFACT = """
service: shop
jobs:
  build:
    run: mkdir -p dist && cat /proc/sys/kernel/random/uuid > dist/stamp.txt
    artifacts: [dist/stamp.txt]
"""


def _sql(home: Path, statement: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(home / "conveyor.db")) as db, db:
        return db.execute(statement).fetchall()


def _age_run(home: Path, run_id: int, days: int) -> None:
    """The run finished `days` ago (as a store that has been running for a while holds)."""
    earlier = f"datetime(finished_at, '-{days} days')"
    _sql(home, f"UPDATE runs SET finished_at = {earlier} WHERE id = {run_id}")  # noqa: S608


def test_a_jobs_log_is_capped_over_all_its_steps_and_the_job_goes_on(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit("pipeline", {"conveyor.yml": STEPS})
    result = conveyor("run", timeout=120)
    assert result.returncode == 0, result.output  # the cap never fails the job
    logs = conveyor("logs", "1", check=True).stdout.splitlines()
    marker = [line for line in logs if "job_log_limit" in line]
    assert marker == [
        "[conveyor] log truncated: the job's output reached its limit of 32.0 KiB "
        "(job_log_limit); the rest of this job's output was discarded"
    ]
    assert "first 399 0123456789012345678901234567890123456789" in logs  # 20 KB: all kept
    assert "second 000 0123456789012345678901234567890123456789" in logs
    assert "second 399 0123456789012345678901234567890123456789" not in logs
    assert "third ran" not in logs
    assert logs[-1] == marker[0]
    assert sum(len(line) + 1 for line in logs) < 34 * 1024
    steps = conveyor("show", "1", check=True).stdout
    assert "third" in steps


def test_db_prune_removes_the_logs_of_runs_older_than_the_log_retention(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    pipeline = "service: shop\njobs:\n  build:\n    run: echo built here\n"
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    for _ in range(2):
        assert conveyor("run", timeout=60).returncode == 0
    _age_run(conveyor.home, 1, 40)
    conveyor.extra_env["CONVEYOR_LOG_RETENTION"] = "30d"
    out = conveyor("db", "prune", check=True).stdout
    assert "removed the logs of 1 run(s)" in out
    assert "logs stored:" in out
    old = conveyor("logs", "1", check=True).stdout
    assert "built here" not in old
    assert "this job's log was removed" in old
    assert "older than CONVEYOR_LOG_RETENTION" in old
    assert "built here" in conveyor("logs", "2", check=True).stdout
    # Again: nothing more to remove, and the store's count agrees with what it holds.
    assert "nothing to remove" in conveyor("db", "prune", check=True).stdout
    stored = _sql(conveyor.home, "SELECT SUM(length(CAST(text AS BLOB))) FROM log_lines")[0][0]
    usage = _sql(conveyor.home, "SELECT bytes FROM store_usage WHERE name = 'logs'")[0][0]
    assert stored == usage


def test_db_prune_removes_old_artifacts_no_release_needs(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.commit("pipeline", {"conveyor.yml": ARTIFACT})
    for _ in range(2):
        assert conveyor("run", timeout=60).returncode == 0, "run failed"
    digests = dict(_sql(conveyor.home, "SELECT run_id, digest FROM artifacts ORDER BY run_id"))
    assert digests[1] != digests[2]

    def stored(run_id: int) -> bool:
        hexdigest = str(digests[run_id]).removeprefix("sha256:")
        return (conveyor.home / "artifacts" / "sha256" / hexdigest[:2] / hexdigest[2:]).is_file()

    _age_run(conveyor.home, 1, 40)
    conveyor.extra_env["CONVEYOR_ARTIFACT_RETENTION"] = "30"
    # Run 1 made a release, among the newest CONVEYOR_KEEP_BUNDLES (5): its files stay.
    assert "nothing to remove" in conveyor("db", "prune", check=True).stdout
    assert stored(1)
    conveyor.extra_env["CONVEYOR_KEEP_BUNDLES"] = "0"
    out = conveyor("db", "prune", check=True).stdout
    assert "removed 1 artifact file(s)" in out
    assert not stored(1)
    assert stored(2)  # newer than the retention
    # The record of what was built stays.
    assert "stamp.txt" in conveyor("show", "1", check=True).stdout


def test_an_invalid_retention_setting_is_refused_clearly(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.commit("pipeline", {"conveyor.yml": "service: shop\njobs:\n  build:\n    run: 'true'\n"})
    assert conveyor("run", timeout=60).returncode == 0
    conveyor.extra_env["CONVEYOR_LOG_RETENTION"] = "a month"
    result = conveyor("db", "prune")
    assert result.returncode == 1
    assert "CONVEYOR_LOG_RETENTION must be a number of days" in result.stderr
    assert "hint:" in result.stderr


@pytest.mark.integration
def test_the_server_applies_the_log_retention_by_itself(repo: GitRepo, conveyor: Conveyor) -> None:
    pipeline = "service: shop\njobs:\n  build:\n    run: echo built here\n"
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    assert conveyor("run", timeout=60).returncode == 0
    _age_run(conveyor.home, 1, 40)
    server = ServerProcess(conveyor.home)
    server.env["CONVEYOR_LOG_RETENTION"] = "30"
    server.admin = server.token("admin", "admin")
    server.start()
    try:
        removed = until(
            lambda: [line for line in server.logs(1) if "log was removed" in line["text"]],
            15,
            "the server's retention pass",
        )
    finally:
        server.stop()
    assert "older than CONVEYOR_LOG_RETENTION" in removed[0]["text"]
    assert removed[0]["attempt"] == 0
