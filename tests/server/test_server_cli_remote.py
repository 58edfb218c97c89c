"""The CLI against a real server (CONVEYOR_URL set): the same commands, the same output."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.serverproc import ServerProcess, until

pytestmark = pytest.mark.integration


def test_run_runs_show_logs_cancel_and_rerun_through_a_server(
    tmp_path: Path, repo: GitRepo, conveyor: Conveyor
) -> None:
    gate = tmp_path / "gate"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: remote
            jobs:
              build:
                run: echo "built $CONVEYOR_SHORT_SHA"
              flaky:
                needs: [build]
                run: |
                  echo checking
                  [ -e {gate} ]
            """
        },
    )
    # The flaky job looks for a gate file outside its workspace: unsandboxed.
    server = ServerProcess(tmp_path / "server-home", runners=2, sandbox=False)
    server.add_service("remote", repo.path)
    server.admin = server.token("me", "admin")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=server.admin)
        first = conveyor("run")
        assert first.returncode == 1  # the gate file is missing: flaky fails
        assert "queued on http://127.0.0.1" in first.stdout
        assert "✗ flaky failed" in first.stdout
        [listed] = conveyor("runs", "--json").json()
        assert (listed["id"], listed["status"], listed["ref"]) == (1, "failed", "refs/heads/main")
        assert "built" in conveyor("logs", "1", "build").stdout
        shown = conveyor("show", "1", "--json").json()
        assert {j["name"]: j["status"] for j in shown["jobs"]} == {
            "build": "succeeded",
            "flaky": "failed",
        }
        gate.touch()
        again = conveyor("rerun", "1", "--failed")
        assert "run 2 queued: a re-run of run 1" in again.stdout
        assert "kept from run 1: build" in again.stdout
        until(lambda: server.run(2)["status"] == "succeeded", 30, "the re-run to succeed")
        followed = conveyor("logs", "2", "flaky", "--follow")
        assert followed.stdout.splitlines() == ["checking"]
        [release] = conveyor("releases", "--json").json()
        assert (release["id"], release["run"], release["service"]) == (1, 2, "remote")
        shown = conveyor("release", "1", "--json").json()
        assert shown["evidence"] == {"jobs": {"build": "succeeded", "flaky": "succeeded"}}
        missing = conveyor("show", "99")
        assert missing.returncode == 1
        assert "there is no run 99" in missing.stderr
    finally:
        server.stop()
    gone = conveyor("runs")
    assert gone.returncode == 1
    assert "cannot reach the server" in gone.stderr
