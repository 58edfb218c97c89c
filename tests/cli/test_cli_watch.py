"""`conveyor watch` follows a push live: the run's jobs, then its release through staging and
an approval to production, and says how to decide when it waits for a person; it exits 0 when
the release serves in the last environment, 1 when the journey stops. A real server with a
runner, real git, real processes deployed and checked over HTTP, the real `conveyor` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import APP, HEALTH, pipeline
from tests.serverproc import Process, ServerProcess, until

pytestmark = pytest.mark.integration

TO_PRODUCTION = pipeline(
    f"""
    staging:
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    production:
      after: staging
      approval: {{ approvers: [ops] }}
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    """
)


def test_watch_follows_a_push_to_production_and_stops_on_a_failed_run(
    tmp_path: Path, conveyor: Conveyor, repo: GitRepo
) -> None:
    server = ServerProcess(tmp_path / "server-home", runners=1)
    server.admin = server.token("ann", "admin")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=server.admin)
        repo.commit(
            "Ship the shop",
            {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": TO_PRODUCTION},
        )
        server.add_service("shop", repo.path)
        assert server.api("POST", "/users", json={"name": "olga", "groups": ["ops"]}).is_success
        olga = server.cli("token", "create", "olga", "--scope", "approve", "--user", "olga")
        olga = olga.splitlines()[0]
        run = server.trigger("shop")["id"]

        watching = Process(
            conveyor.argv("watch", str(run), "--every", "0.2"),
            conveyor.env(),
            tmp_path / "watch",
            repo.path,
        )
        try:
            # Each look reads the timeline as it is then: staging's success and the approval
            # may show in two looks, in either order.
            asked = until(
                lambda: (
                    "waiting for a decision: conveyor approve" in watching.stdout()
                    and "to staging: succeeded" in watching.stdout()
                ),
                90,
                "the watch to reach the approval",
            )
            assert asked
            printed = watching.stdout()
            assert printed.startswith(f"watching run {run} of shop (")
            assert "✓ test succeeded in " in printed
            assert f"run {run} succeeded in " in printed
            assert "to staging: succeeded" in printed
            assert "for production: pending (0/1)" in printed
            assert watching.alive()  # it waits for the person, as the release does
            [approval] = server.api("GET", "/approvals").json()
            path = f"/approvals/{approval['id']}/approve"
            decided = server.api("POST", path, token=olga, json={})
            assert decided.is_success, decided.text
            assert watching.proc.wait(timeout=60) == 0, watching.stderr()
        finally:
            watching.stop()
        printed = watching.stdout()
        assert "for production: approved (1/1) by olga (approve" in printed
        [done] = [line for line in printed.splitlines() if "to production: succeeded" in line]
        assert "waiting for approval" not in done  # the wait is over: not said of a success
        assert printed.rstrip().endswith("serves in production")
        # Each change once: the pending approval was said once, not at every look.
        assert printed.count("for production: pending (0/1)") == 1
        assert watching.stderr() == ""

        repo.commit("Break the tests", {"conveyor.yml": TO_PRODUCTION.replace("'true'", "'false'")})
        broken = server.trigger("shop")["id"]
        stopped = conveyor("watch", "--every", "0.2", timeout=90)  # the newest run
        assert stopped.returncode == 1, stopped.stderr
        assert f"watching run {broken} of shop" in stopped.stdout
        assert "✗ test failed" in stopped.stdout
        assert f"run {broken} failed" in stopped.stdout
        assert f"`conveyor logs {broken}` says why" in stopped.stdout
    finally:
        server.stop()


def test_watch_says_what_is_wrong_without_a_traceback(conveyor: Conveyor) -> None:
    nothing = conveyor("watch")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: there is no run to watch yet")
    both = conveyor("watch", "1", "--release", "1")
    assert both.returncode != 0
    assert "give a run or --release, not both" in both.stderr
    assert "Traceback" not in nothing.stderr + both.stderr
