"""Pipelines run end to end through the real CLI, real git and real processes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.serverproc import UNSANDBOXED


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_json(conveyor: Conveyor, run_id: int) -> dict[str, Any]:
    data: dict[str, Any] = conveyor("show", str(run_id), "--json", check=True).json()
    return data


@pytest.fixture
def trace(tmp_path: Path, conveyor: Conveyor) -> Path:
    """A folder the steps write to and the test reads (or the other way round), with the pids
    they print: the engine's behaviour, so the steps run unsandboxed (the sandbox would show
    them neither this folder nor the real pids); tests/security shows the sandbox."""
    conveyor.extra_env.update(UNSANDBOXED)
    path = tmp_path / "trace"
    path.mkdir()
    return path


def test_jobs_run_in_dependency_order_and_succeed(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              lint:
                run: echo lint >> {trace}/order
              test:
                run: echo test >> {trace}/order
              package:
                needs: [lint, test]
                run: echo package >> {trace}/order
            """
        },
    )
    result = conveyor("run", "-j", "1")
    assert result.returncode == 0, result.output
    order = (trace / "order").read_text().split()
    assert sorted(order[:2]) == ["lint", "test"]
    assert order[2] == "package"
    assert "run 1 succeeded" in result.stdout
    [run] = conveyor("runs", "--json").json()
    assert run["status"] == "succeeded"
    assert run["ref"] == "refs/heads/main"


def test_parallel_jobs_really_overlap_and_the_limit_holds(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    # a and b each wait for the other's marker: they can only both pass if they overlap.
    wait_other = (
        "touch {trace}/{me}; for i in $(seq 200); do "
        "[ -e {trace}/{other} ] && exit 0; sleep 0.05; done; exit 1"
    )
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              a:
                run: {wait_other.format(trace=trace, me="a", other="b")}
              b:
                run: {wait_other.format(trace=trace, me="b", other="a")}
            """
        },
    )
    assert conveyor("run", "-j", "2").returncode == 0
    (trace / "a").unlink()
    (trace / "b").unlink()
    limited = conveyor("run", "-j", "1")
    assert limited.returncode == 1  # with one slot, neither sees the other
    assert "failed" in limited.stdout


def test_failure_skips_dependants_runs_failure_and_always_jobs(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              test:
                run: echo about to fail; exit 3
              package:
                needs: [test]
                run: echo never
              report:
                needs: [test]
                if: failure
                run: echo reporting the failure
              cleanup:
                needs: [package]
                if: always
                run: echo cleaning
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 1
    assert "job test failed" in result.stdout
    assert "about to fail" in result.stderr  # the failing log's tail
    jobs = {j["name"]: j for j in run_json(conveyor, 1)["jobs"]}
    assert jobs["test"]["status"] == "failed"
    assert jobs["test"]["steps"][0]["exit_code"] == 3
    assert jobs["package"]["status"] == "skipped"
    assert jobs["package"]["reason"] == "needs test, which did not pass"
    assert jobs["report"]["status"] == "succeeded"
    assert jobs["cleanup"]["status"] == "succeeded"


def test_step_conditions_retries_and_continue_on_error(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              build:
                steps:
                  - name: flaky
                    retries: 2
                    run: |
                      echo x >> {trace}/tries
                      [ $(wc -l < {trace}/tries) -ge 3 ]
                  - name: allowed to fail
                    continue_on_error: true
                    run: exit 1
                  - name: after
                    run: echo still running
                  - name: only on failure
                    if: failure
                    run: echo should not run
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 0, result.output
    steps = {s["name"]: s for s in run_json(conveyor, 1)["jobs"][0]["steps"]}
    assert steps["flaky"]["status"] == "succeeded"
    assert steps["flaky"]["attempts"] == 3
    assert steps["allowed to fail"]["status"] == "failed"
    assert steps["after"]["status"] == "succeeded"
    assert steps["only on failure"]["status"] == "skipped"
    logs = conveyor("logs", "1", "build").stdout
    assert "attempt 1 of 3 exited with 1; trying again" in logs


def test_timeout_kills_the_whole_process_group(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              hang:
                timeout: 1s
                run: |
                  sleep 300 &
                  echo $! > {trace}/child
                  sleep 300
            """
        },
    )
    started = time.monotonic()
    result = conveyor("run")
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "timed out after 1s" in result.output
    child = int((trace / "child").read_text())
    wait_for(lambda: not alive(child), what="the background child to be killed")


def test_conveyor_variables_are_set(repo: GitRepo, conveyor: Conveyor) -> None:
    sha = repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              show:
                env: { GREETING: hello }
                steps:
                  - name: print
                    env: { STEP_ONLY: "1" }
                    run: |
                      echo "sha=$CONVEYOR_SHA"
                      echo "ref=$CONVEYOR_REF branch=$CONVEYOR_BRANCH"
                      echo "service=$CONVEYOR_SERVICE job=$CONVEYOR_JOB step=$CONVEYOR_STEP"
                      echo "run=$CONVEYOR_RUN_ID ci=$CI greeting=$GREETING step_only=$STEP_ONLY"
                      echo "workspace_is_cwd=$([ "$CONVEYOR_WORKSPACE" = "$PWD" ] && echo yes)"
                      echo "home=${CONVEYOR_HOME:-unset}"
            """
        },
    )
    conveyor("run", check=True)
    logs = conveyor("logs", "1").stdout
    assert f"sha={sha}" in logs
    assert "ref=refs/heads/main branch=main" in logs
    assert "service=shop job=show step=print" in logs
    assert "run=1 ci=true greeting=hello step_only=1" in logs
    assert "workspace_is_cwd=yes" in logs
    assert "home=unset" in logs  # the runner's own settings do not leak into steps


def test_secrets_are_masked_in_every_form_and_never_stored(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    secret = "s3cr3t/value+with&chars"
    value_file = conveyor.cwd.parent / "api-token"
    value_file.write_text(secret)
    conveyor("secret", "set", "shop", "API_TOKEN", "--value-file", str(value_file), check=True)
    # Exported to the runner under the secret's name: kept out of the step's environment.
    conveyor.extra_env["API_TOKEN"] = "from-the-environment-42"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              leak:
                env:
                  TOKEN: ${{ secrets.API_TOKEN }}
                run: |
                  echo "plain $TOKEN"
                  echo "b64 $(printf '%s' "$TOKEN" | base64 -w0)"
                  echo "basic $(printf 'user:%s' "$TOKEN" | base64 -w0)"
                  python3 -c 'import os, urllib.parse as u; print(u.quote(os.environ["TOKEN"], ""))'
                  echo "inherited=${API_TOKEN:-absent}"
            """
        },
    )
    conveyor("run", check=True)
    logs = conveyor("logs", "1").stdout
    for form in (
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"user:{secret}".encode()).decode(),
        urllib.parse.quote(secret, safe=""),
        "from-the-environment-42",
    ):
        assert form not in logs
    assert "plain ***" in logs
    assert "inherited=absent" in logs
    database = (conveyor.home / "conveyor.db").read_bytes()
    wal = conveyor.home / "conveyor.db-wal"
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    assert secret.encode() not in stored


def test_a_missing_secret_fails_the_job_clearly(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              deploy:
                env: { TOKEN: "${{ secrets.NOPE }}" }
                run: echo "$TOKEN"
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 1
    assert "secret NOPE is not set" in result.output


def test_huge_output_is_truncated_with_a_marker(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            defaults: { log_limit: 64KiB }
            jobs:
              noisy:
                run: |
                  seq 5000000
                  echo done
            """
        },
    )
    result = conveyor("run", timeout=120)
    assert result.returncode == 0, result.output
    logs = conveyor("logs", "1").stdout
    assert "output truncated after" in logs
    assert len(logs) < 200_000


def test_artifacts_are_stored_by_digest(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              package:
                run: mkdir -p dist && printf 'wheel-bytes' > dist/shop.whl
                artifacts: [dist/*.whl]
            """
        },
    )
    conveyor("run", check=True)
    [artifact] = run_json(conveyor, 1)["artifacts"]
    digest = hashlib.sha256(b"wheel-bytes").hexdigest()
    assert artifact == {
        "job": "package",
        "path": "dist/shop.whl",
        "digest": f"sha256:{digest}",
        "size": 11,
    }
    stored = conveyor.home / "artifacts" / "sha256" / digest[:2] / digest[2:]
    assert stored.read_bytes() == b"wheel-bytes"


def test_an_artifact_pattern_that_matches_nothing_fails_the_job(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              package:
                run: "true"
                artifacts: [dist/*.whl]
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 1
    assert "matched no files" in result.output


def _start_blocking_run(conveyor: Conveyor, repo: GitRepo, trace: Path) -> subprocess.Popen[str]:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              slow:
                run: |
                  echo $$ > {trace}/pid
                  echo ready
                  sleep 300
              after:
                needs: [slow]
                run: echo never
            """
        },
    )
    proc = conveyor.popen("run")
    wait_for((trace / "pid").exists, what="the step to start")
    return proc


def test_logs_follow_streams_while_the_step_runs(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              talk:
                run: |
                  echo first line
                  while [ ! -e {trace}/go ]; do sleep 0.05; done
                  echo second line
            """
        },
    )
    with conveyor.popen("run") as run:
        wait_for(
            lambda: run.poll() is not None or conveyor("runs", "--json").json(),
            what="the run to exist",
        )
        assert run.poll() is None, run.communicate()
        with conveyor.popen("logs", "1", "--follow") as follow:
            assert follow.stdout is not None
            assert follow.stdout.readline().strip() == "first line"
            (trace / "go").touch()  # only now can the step print its second line
            assert follow.stdout.readline().strip() == "second line"
            assert follow.wait(timeout=30) == 0
        assert run.wait(timeout=30) == 0


@pytest.mark.parametrize("how", ["cancel command", "ctrl-c"])
def test_cancel_stops_the_process_group(
    repo: GitRepo, conveyor: Conveyor, trace: Path, how: str
) -> None:
    with _start_blocking_run(conveyor, repo, trace) as proc:
        step_pid = int((trace / "pid").read_text())
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            result = conveyor("cancel", "1")
            assert "cancel requested for run 1" in result.stdout
        assert proc.wait(timeout=30) == 130
    wait_for(lambda: not alive(step_pid), what="the step to be stopped")
    data = run_json(conveyor, 1)
    assert data["status"] == "cancelled"
    assert {j["name"]: j["status"] for j in data["jobs"]} == {
        "slow": "cancelled",
        "after": "cancelled",
    }
    again = conveyor("cancel", "1")
    assert again.returncode == 1
    assert "already been cancelled" in again.stderr


def test_kill_9_mid_run_is_recovered_as_interrupted(
    repo: GitRepo, conveyor: Conveyor, trace: Path
) -> None:
    with _start_blocking_run(conveyor, repo, trace) as proc:
        step_pid = int((trace / "pid").read_text())
        wait_for(
            lambda: run_json(conveyor, 1)["jobs"][0]["steps"][0]["status"] == "running",
            what="the step to be recorded as running",
        )
        proc.kill()
        proc.wait(timeout=10)
    assert alive(step_pid)  # it runs in its own process group, so it survived
    listing = conveyor("runs", "--json")
    assert "run 1 was interrupted" in listing.stderr
    assert listing.json()[0]["status"] == "interrupted"
    wait_for(lambda: not alive(step_pid), what="the orphaned step to be stopped")
    data = run_json(conveyor, 1)
    assert {j["name"]: j["status"] for j in data["jobs"]} == {
        "slow": "interrupted",
        "after": "interrupted",
    }
    db = conveyor.home / "conveyor.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The store still works for the next run.
    repo.commit("fix", {"conveyor.yml": "service: shop\njobs:\n  ok:\n    run: 'true'\n"})
    assert conveyor("run").returncode == 0
