"""The whole chain on the process target: a release goes to staging (blue-green), is checked
and verified, then waits for approval before production; a failure rolls back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration

# A smoke test: the deployment answers at $CONVEYOR_DEPLOY_URL.
SMOKE = "import os, urllib.request as u; u.urlopen(os.environ['CONVEYOR_DEPLOY_URL'])"
CHAIN = f"""
staging:
  deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
  {HEALTH}
  verify:
    - run: python3 -c "{SMOKE}"
production:
  after: staging
  approval: {{ approvers: [ops], required: 1 }}
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def test_a_release_walks_the_chain_and_waits_for_approval_before_production(
    repo: GitRepo, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    release(repo, conveyor, "v1", pipeline(CHAIN))
    conveyor("user", "add", "olga", "--group", "ops", check=True)

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            staging = h.env("staging")
            assert staging["version"].startswith("r1-")
            assert staging["healthy"] is True
            assert (await h.get(staging["url"])).text == "v1"
            production = h.env("production")
            assert production["version"] is None
            [waiting] = production["queue"]
            assert waiting["status"] == "awaiting_approval"

    asyncio.run(scenario())
    approvals = conveyor("approvals", "--json").json()
    assert [(a["environment"], a["status"]) for a in approvals] == [("production", "pending")]
    refused = conveyor("approve", str(approvals[0]["id"]), cwd=Path(repo.path))
    assert refused.returncode != 0
    assert "not known" in refused.stderr or "not an approver" in refused.stderr
    conveyor.extra_env["CONVEYOR_USER"] = "olga"
    conveyor("approve", str(approvals[0]["id"]), "--reason", "looks good", check=True)

    async def after_approval() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            production = h.env("production")
            assert production["version"].startswith("r1-")
            assert (await h.get(production["url"])).text == "v1"

    asyncio.run(after_approval())
    audit = conveyor("audit", "--json").json()
    decision = next(e for e in audit if e["type"] == "approval.decision")
    assert decision["actor"] == "olga"
    assert decision["data"]["reason"] == "looks good"
    assert any(e["type"] == "approval.refused" for e in audit)


PRODUCTION = f"""
production:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def test_a_failed_production_check_rolls_back_records_it_and_opens_then_resolves_an_incident(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    release(repo, conveyor, "v1", pipeline(PRODUCTION))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v1"
            release(repo, conveyor, "v2", pipeline(PRODUCTION), healthy=False)
            await h.settle()
            production = h.env("production")
            assert production["version"].startswith("r1-")
            assert production["healthy"] is True
            assert (await h.get(production["url"])).text == "v1"
            first, failed, rollback = h.deployments("production")
            assert (first["status"], first["kind"]) == ("succeeded", "deploy")
            assert (failed["status"], failed["release"]) == ("rolled_back", 2)
            assert "503" in failed["reason"]
            assert (rollback["kind"], rollback["status"]) == ("rollback", "succeeded")
            assert (rollback["release"], rollback["rollback_of"]) == (1, failed["id"])

    asyncio.run(scenario())
    [incident] = conveyor("incidents", "--json").json()
    assert incident["status"] == "resolved"
    assert incident["deployment"] == 2
    assert "rollback deployment 3" in incident["resolved_by"]


def test_blue_green_keeps_the_old_release_serving_when_the_new_one_is_unhealthy(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = f"""
    staging:
      deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
      {HEALTH}
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            release(repo, conveyor, "v2", pipeline(env), healthy=False)
            await h.settle()
            staging = h.env("staging")
            assert (await h.get(staging["url"])).text == "v1"
            assert staging["version"].startswith("r1-")
            _first, failed = h.deployments("staging")
            assert failed["status"] == "failed"
            assert "r1-" in failed["reason"]
            assert "kept serving" in failed["reason"]

    asyncio.run(scenario())
    assert conveyor("incidents", "--json").json() == []


def test_a_failed_verification_after_the_switch_rolls_back(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    def env(verify: str) -> str:
        return f"""
        staging:
          deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
          {HEALTH}
          verify:
            - run: {verify}
        """

    release(repo, conveyor, "v1", pipeline(env("'true'")))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            release(repo, conveyor, "v2", pipeline(env("echo smoke broke; exit 3")))
            await h.settle()
            staging = h.env("staging")
            assert (await h.get(staging["url"])).text == "v1"
            _, failed, rollback = h.deployments("staging")
            assert failed["status"] == "rolled_back"
            assert "verification failed" in failed["reason"]
            assert rollback["kind"] == "rollback"

    asyncio.run(scenario())
    detail = conveyor("deployment", "2").stdout
    assert "smoke broke" in detail


def test_a_start_command_that_exits_at_once_fails_clearly_and_changes_nothing(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = """
    staging:
      deploy: { target: process, start: "echo no such module >&2; exit 4", strategy: blue-green }
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [failed] = h.deployments("staging")
            assert failed["status"] == "failed"
            assert "status 4" in failed["reason"]
            assert "no such module" in failed["reason"]
            assert h.env("staging")["version"] is None

    asyncio.run(scenario())
