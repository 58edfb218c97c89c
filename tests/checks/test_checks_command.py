"""command_check, run_health and run_verify with real bash commands (and a real HTTP server)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.checks.base import Outcome, combine
from conveyor.checks.command import CommandCheck, command_check
from conveyor.checks.health import run_health, run_verify
from conveyor.spec.models import Health, VerifyStep
from tests.prometheus import Reply, StubServer

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def check(run: str, **fields: Any) -> CommandCheck:
    values: dict[str, Any] = {"run": run, "interval": 0.05, "within": 3, **fields}
    return CommandCheck.model_validate(values)


# --- command_check ----------------------------------------------------------------------------


def test_passes_on_exit_zero(tmp_path: Path) -> None:
    result = asyncio.run(command_check(check("true"), env=ENV, cwd=tmp_path))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.kind == "command"
    assert result.data["exit_codes"] == [0]


def test_needs_consecutive_successes(tmp_path: Path) -> None:
    # Fails on the first two runs (the counter file grows by a line each run), then passes.
    script = 'echo run >> count; n=$(wc -l < count); [ "$n" -gt 2 ] || { echo "only $n"; exit 1; }'
    result = asyncio.run(command_check(check(script, successes=3), env=ENV, cwd=tmp_path))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.data["exit_codes"] == [1, 1, 0, 0, 0]
    assert (tmp_path / "count").read_text().count("run") == 5


def test_failure_names_exit_status_and_output_tail(tmp_path: Path) -> None:
    script = "echo checking replicas; echo '0/3 replicas ready' >&2; exit 4"
    # Runs at 0 s and 1 s, each over in far less than the 0.5 s left after the second, so the
    # window closes between runs (with runs back to back it could close during one, busy
    # machines make sandbox start-up slower).
    window = check(script, interval=1.0, within=1.5)
    result = asyncio.run(command_check(window, env=ENV, cwd=tmp_path))
    assert result.outcome is Outcome.FAIL
    assert result.detail == (
        "command exited 4; 0/1 consecutive successes in 1.5 s: "
        "checking replicas | 0/3 replicas ready"
    )
    assert set(result.data["exit_codes"]) == {4}
    assert result.data["runs"] >= 2


def test_the_environment_and_working_directory_are_the_given_ones(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("")
    env = {**ENV, "CONVEYOR_DEPLOY_URL": "http://127.0.0.1:1"}
    script = 'test -e marker && [ "$CONVEYOR_DEPLOY_URL" = http://127.0.0.1:1 ]'
    result = asyncio.run(command_check(check(script), env=env, cwd=tmp_path))
    assert result.outcome is Outcome.PASS, result.detail


def test_a_run_is_bounded_by_the_remaining_window(tmp_path: Path) -> None:
    started = time.monotonic()
    result = asyncio.run(
        command_check(check("echo waiting; sleep 30", within=0.5), env=ENV, cwd=tmp_path)
    )
    took = time.monotonic() - started
    assert result.outcome is Outcome.FAIL
    assert result.detail == (
        "command still running after 0.5 s; 0/1 consecutive successes in 0.5 s: waiting"
    )
    assert result.data["exit_codes"] == [None]
    assert took < 10  # the window, SIGTERM and a short wait: far from the 30 s sleep


def test_cannot_start_is_inconclusive(tmp_path: Path) -> None:
    result = asyncio.run(command_check(check("true"), env=ENV, cwd=tmp_path / "missing"))
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "does not exist" in result.detail


def _running(argv: bytes) -> list[int]:
    """Processes of this machine with exactly this command line (NUL-separated)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "cmdline").read_bytes() == argv:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_cancel_kills_the_command(tmp_path: Path) -> None:
    # Found by its command line: in the sandbox `$$` is a pid of the sandbox's own namespace.
    duration = f"30.{os.getpid()}"

    async def cancel_mid_run() -> None:
        script = f"echo started > started; exec sleep {duration}"
        task = asyncio.create_task(command_check(check(script), env=ENV, cwd=tmp_path))
        deadline = time.monotonic() + 10
        while not _running(f"sleep\0{duration}\0".encode()):
            assert time.monotonic() < deadline, "the command did not start"
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait_for(task, 5)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_mid_run())
    assert (tmp_path / "started").exists()
    assert _running(f"sleep\0{duration}\0".encode()) == []


# --- run_health -------------------------------------------------------------------------------


def test_run_health_runs_the_checks_concurrently(tmp_path: Path) -> None:
    # Each check can only pass while the other runs: the HTTP endpoint answers 200 once the
    # command has left a file, and the command passes once the endpoint has been probed. One
    # after the other, the first would fail whichever went first.
    flag = tmp_path / "command-ran"

    def answer(path: str) -> Reply:
        (tmp_path / "probed").touch()
        return Reply(200, "ok") if flag.exists() else Reply(503, "waiting for the command")

    health = Health.model_validate(
        {
            "http": {"path": "/", "interval": 0.05, "within": 5, "timeout": 1},
            "command": {"run": "touch command-ran; test -e probed", "interval": 0.05, "within": 5},
        }
    )
    with StubServer(answer) as server:
        results = asyncio.run(
            run_health(health, base_url=server.url, env=ENV, cwd=tmp_path, prometheus_url=None)
        )
    assert [r.kind for r in results] == ["http", "command"]
    assert [r.outcome for r in results] == [Outcome.PASS, Outcome.PASS], results
    assert combine(results) is Outcome.PASS


def test_run_health_without_a_url_is_inconclusive_for_http(tmp_path: Path) -> None:
    health = Health.model_validate(
        {"http": {"path": "/"}, "command": {"run": "true", "interval": 0.05}}
    )
    results = asyncio.run(
        run_health(health, base_url=None, env=ENV, cwd=tmp_path, prometheus_url=None)
    )
    assert [(r.kind, r.outcome) for r in results] == [
        ("http", Outcome.INCONCLUSIVE),
        ("command", Outcome.PASS),
    ]
    assert results[0].detail == "the target has no URL to probe"
    assert combine(results) is Outcome.INCONCLUSIVE


def test_run_health_prometheus_without_any_url_is_inconclusive(tmp_path: Path) -> None:
    health = Health.model_validate({"prometheus": {"query": "up", "below": 1, "for": 1}})
    [result] = asyncio.run(
        run_health(health, base_url=None, env=ENV, cwd=tmp_path, prometheus_url=None)
    )
    assert result.kind == "prometheus"
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "no Prometheus URL" in result.detail


# --- run_verify -------------------------------------------------------------------------------


def verify(steps: list[dict[str, Any]], cwd: Path) -> tuple[Any, list[str]]:
    lines: list[str] = []
    env = {**ENV, "CONVEYOR_DEPLOY_URL": "http://127.0.0.1:8080"}
    parsed = [VerifyStep.model_validate(s) for s in steps]
    result = asyncio.run(run_verify(parsed, env=env, cwd=cwd, on_line=lines.append))
    return result, lines


def test_run_verify_runs_every_step_in_order(tmp_path: Path) -> None:
    result, lines = verify(
        [
            {"name": "smoke", "run": 'echo "smoke against $CONVEYOR_DEPLOY_URL"'},
            {"run": "echo second"},
        ],
        tmp_path,
    )
    assert result.outcome is Outcome.PASS, result.detail
    assert result.kind == "verify"
    assert result.detail == "2 verify steps passed"
    assert "smoke against http://127.0.0.1:8080" in lines
    assert lines.index("smoke against http://127.0.0.1:8080") < lines.index("second")
    assert [s["name"] for s in result.data["steps"]] == ["smoke", "echo second"]


def test_run_verify_stops_at_the_first_failure(tmp_path: Path) -> None:
    result, lines = verify(
        [
            {"name": "smoke", "run": "echo one"},
            {"name": "api", "run": "echo 'expected 3 items, got 2'; exit 3"},
            {"name": "never", "run": "echo never; touch never-ran"},
        ],
        tmp_path,
    )
    assert result.outcome is Outcome.FAIL
    assert result.detail == "verify step 2/3 'api' exited 3: expected 3 items, got 2"
    assert "one" in lines
    assert "never" not in lines
    assert not (tmp_path / "never-ran").exists()
    assert [s["exit_code"] for s in result.data["steps"]] == [0, 3]
    assert result.data["skipped"] == ["never"]


def test_run_verify_step_timeout(tmp_path: Path) -> None:
    result, _ = verify([{"name": "slow", "run": "sleep 30", "timeout": 0.3}], tmp_path)
    assert result.outcome is Outcome.FAIL
    assert result.detail == "verify step 1/1 'slow' timed out after 0.3 s"


def test_run_verify_without_steps_passes(tmp_path: Path) -> None:
    result, lines = verify([], tmp_path)
    assert result.outcome is Outcome.PASS
    assert lines == []
