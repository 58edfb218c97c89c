"""The whole chain on the process target: a release goes to staging (blue-green), is checked
and verified, then waits for approval before production; a failure rolls back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration

CHAIN = f"""
staging:
  deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
  {HEALTH}
  verify:
    - run: python3 -c "import os, urllib.request; urllib.request.urlopen(os.environ['CONVEYOR_DEPLOY_URL'])"
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
