"""`conveyor release N` tells the release's story in order (commit, run, release, deployments,
approvals, rollbacks, incidents, with their times), and `conveyor deployment N` shows what the
deployed app itself printed, not where its log is. A real `conveyor run`, a real delivery
controller on the same data directory, a real process deployed and checked over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import APP, HEALTH, delivery, pipeline
from tests.serverproc import ServerProcess, until

pytestmark = pytest.mark.integration

PRODUCTION = f"""
production:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""
# The app says something of its own when it starts, as a real one logs its start-up.
LOUD_APP = 'import sys\nprint("shop booting: 3 workers", file=sys.stderr, flush=True)\n' + APP


def test_release_prints_its_timeline_and_deployment_the_apps_output(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit(
        "Add the shop",
        {
            "app.py": LOUD_APP,
            "VERSION": "v1",
            "HEALTHY": "yes",
            "conveyor.yml": pipeline(PRODUCTION),
        },
    )
    conveyor("run", check=True)

    async def deploy() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            assert h.env("production")["healthy"] is True

    asyncio.run(deploy())
    [dep] = conveyor("deployments", "--json", check=True).json()
    assert dep["status"] == "succeeded"

    shown = conveyor("release", str(dep["release"]), check=True).stdout
    timeline = shown.split("  timeline:\n", 1)[1].splitlines()
    events = [line.strip().split("  ", 1)[1] for line in timeline]  # after the time
    assert [e.split(" ", 1)[0] for e in events] == ["committed", "run", "released", "deployment"]
    assert events[0].endswith("Add the shop by Ada Author")
    assert events[1].startswith("run 1 succeeded in ")
    assert "✓ test" in events[1]
    assert events[3].startswith(
        f"deployment {dep['id']} of {dep['version']} to production: succeeded in "
    )
    assert events[3].endswith("(checks: http pass)")
    times = [line.strip()[:19] for line in timeline]
    assert times == sorted(times)  # in the order they happened

    detail = conveyor("deployment", str(dep["id"]), check=True).stdout
    output = detail.split("  the app's output (last lines):\n", 1)[1]
    assert "  > shop booting: 3 workers\n" in output


APPROVED_PRODUCTION = """\
service: shop
jobs:
  build:
    run: echo building
environments:
  production:
    approval: { approvers: [ops] }
    deploy: { target: process, start: python3 -m http.server $PORT }
"""


def test_through_a_server_release_shows_its_timeline_and_remove_waits_for_the_deployment(
    tmp_path: Path, conveyor: Conveyor, repo: GitRepo
) -> None:
    """The same timeline from GET /releases/{id}/timeline; and a deployment waiting for its
    approval is work in progress that `service remove` will not pull out from under it."""
    server = ServerProcess(tmp_path / "server-home", runners=1)
    server.admin = server.token("ann", "admin")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=server.admin)
        repo.write("conveyor.yml", APPROVED_PRODUCTION)
        repo.commit("Ship the shop")
        conveyor("service", "add", "shop", "--repo", str(repo.path), check=True)
        run = server.wait_run(server.trigger("shop")["id"], timeout=60)
        assert run["status"] == "succeeded", run
        waiting = until(
            lambda: server.api("GET", "/approvals").json(), what="the approval to be asked"
        )
        approval, deployment = waiting[0]["id"], waiting[0]["deployment"]

        shown = conveyor("release", "1", check=True).stdout
        events = [
            line.strip().split("  ", 1)[1]
            for line in shown.split("  timeline:\n", 1)[1].splitlines()
        ]
        kinds = [e.split(" ", 1)[0] for e in events]
        assert kinds[:3] == ["committed", "run", "released"]
        assert f"deployment {deployment} of " in shown
        assert f"approval {approval} for production: pending (0/1)" in shown

        refused = conveyor("service", "remove", "shop", "--yes")
        assert refused.returncode == 1
        assert f"deployment {deployment} (awaiting_approval in production)" in refused.stderr
        assert [s["name"] for s in server.api("GET", "/services").json()] == ["shop"]
    finally:
        server.stop()
