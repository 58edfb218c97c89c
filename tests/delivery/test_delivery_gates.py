"""Gates and queues: holds, FIFO per environment, supersede, manual promotion and rollback,
N-of-M approvals without self-approval, approval timeouts, inconclusive checks."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration

STAGING = f"""
staging:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def test_a_held_environment_queues_releases_visibly_until_unheld(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    release(repo, conveyor, "v1", pipeline(STAGING))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            conveyor("hold", "staging", "--reason", "freeze for the audit", check=True)
            release(repo, conveyor, "v2", pipeline(STAGING))
            release(repo, conveyor, "v3", pipeline(STAGING))
            await h.settle()
            staging = h.env("staging")
            assert staging["version"].startswith("r1-")
            assert staging["held"] is True
            assert [(q["release"], q["status"]) for q in staging["queue"]] == [
                (2, "queued"),
                (3, "queued"),
            ]
            assert "freeze for the audit" in staging["queue"][0]["reason"]
            shown = conveyor("envs").stdout
            assert "HELD" in shown
            assert "freeze for the audit" in shown
            conveyor("unhold", "staging", check=True)
            await h.settle()
            # FIFO: release 2 was deployed before release 3, one at a time.
            done = [(d["release"], d["status"]) for d in h.deployments("staging")]
            assert done == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded")]
            assert (await h.get(h.env("staging")["url"])).text == "v3"

    asyncio.run(scenario())
    audit = [e["type"] for e in conveyor("audit", "--json").json()]
    assert "environment.held" in audit
    assert "environment.unheld" in audit


def test_supersede_lets_the_newest_queued_release_skip_older_ones_visibly(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = STAGING + "  supersede: true\n"
    release(repo, conveyor, "v1", pipeline(env))
    conveyor("hold", "staging", "--reason", "wait", check=True)
    release(repo, conveyor, "v2", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            conveyor("unhold", "staging", check=True)
            await h.settle()
            found = {d["release"]: d for d in h.deployments("staging")}
            assert found[1]["status"] == "superseded"
            assert found[1]["reason"] == "superseded by release 2"
            assert found[2]["status"] == "succeeded"

    asyncio.run(scenario())


def test_promote_respects_the_chain_and_rollback_restores_an_earlier_release(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = (
        STAGING
        + f"""
production:
  after: staging
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""
    )
    release(repo, conveyor, "v1", pipeline(env))
    early = conveyor("promote", "1", "production")
    assert early.returncode == 1
    assert "release 1 has not reached staging yet" in early.stderr
    nothing = conveyor("rollback", "production")
    assert nothing.returncode == 1
    assert "nothing has been deployed" in nothing.stderr

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            release(repo, conveyor, "v2", pipeline(env))
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v2"
            conveyor("rollback", "production", check=True)
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v1"
            last = h.deployments("production")[-1]
            assert (last["kind"], last["status"], last["release"]) == ("rollback", "succeeded", 1)
            wrong = conveyor("rollback", "production", "--to", "7")
            assert wrong.returncode == 1
            assert "release 7 never succeeded" in wrong.stderr
            conveyor("rollback", "production", "--to", "2", check=True)
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v2"

    asyncio.run(scenario())


APPROVED = f"""
production:
  approval: {{ approvers: [ops, carol], required: 2 }}
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def test_two_of_many_approvals_without_self_approval(repo: GitRepo, conveyor: Conveyor) -> None:
    # The commit's author is Ada Author <ada@example.com> (tests.conftest.GIT_ENV).
    for name, args in {
        "olga": ["--group", "ops"],
        "carol": [],
        "ann": ["--group", "ops", "--email", "ada@example.com"],
        "bob": [],
    }.items():
        conveyor("user", "add", name, *args, check=True)
    release(repo, conveyor, "v1", pipeline(APPROVED))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [approval] = conveyor("approvals", "--json").json()
            number = str(approval["id"])
            for who, message in [
                ("ann", "in the range being deployed: no self-approval"),
                ("bob", "not an approver"),
            ]:
                conveyor.extra_env["CONVEYOR_USER"] = who
                refused = conveyor("approve", number)
                assert refused.returncode == 3, refused.output
                assert message in refused.stderr
            conveyor.extra_env["CONVEYOR_USER"] = "olga"
            first = conveyor("approve", number, check=True)
            assert (
                first.stdout == f"approval {number}: your approval is recorded; it waits for more\n"
            )
            again = conveyor("approve", number)
            assert "already decided" in again.stderr
            await h.settle()
            assert h.env("production")["version"] is None  # one of two
            conveyor.extra_env["CONVEYOR_USER"] = "carol"
            second = conveyor("approve", number, "--reason", "ship", check=True)
            assert second.stdout == f"approval {number}: approved\n"
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v1"

    asyncio.run(scenario())
    refusals = [e for e in conveyor("audit", "--json").json() if e["type"] == "approval.refused"]
    assert {e["actor"] for e in refusals} == {"ann", "bob"}


def test_a_rejection_needs_a_reason_and_stops_the_deployment(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    conveyor("user", "add", "olga", "--group", "ops", check=True)
    release(repo, conveyor, "v1", pipeline(APPROVED))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [approval] = conveyor("approvals", "--json").json()
            conveyor.extra_env["CONVEYOR_USER"] = "olga"
            missing = conveyor("reject", str(approval["id"]))
            assert missing.returncode == 2
            assert "--reason" in missing.stderr
            rejected = conveyor(
                "reject", str(approval["id"]), "--reason", "not on a Friday", check=True
            )
            assert rejected.stdout == f"approval {approval['id']}: rejected\n"
            await h.settle()
            [dep] = h.deployments("production")
            assert dep["status"] == "rejected"
            assert "not on a Friday" in dep["reason"]

    asyncio.run(scenario())


def test_an_approval_that_times_out_applies_its_default_action(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = f"""
    production:
      approval: {{ approvers: [ops], timeout: 200ms, on_timeout: reject }}
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [approval] = conveyor("approvals", "--json").json()
            deadline = approval["deadline"]
            # Tick until the deadline has passed (bounded): the controller applies on_timeout.
            for _ in range(100):
                await h.settle()
                if h.deployments("production")[0]["status"] != "awaiting_approval":
                    break
                await asyncio.sleep(0.05)
            [dep] = h.deployments("production")
            assert dep["status"] == "rejected", (dep, deadline)
            assert "timed out" in dep["reason"]

    asyncio.run(scenario())


def test_inconclusive_checks_hold_the_deployment_for_a_person(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    # Prometheus at an address where nothing listens: the check cannot decide.
    env = """
    staging:
      deploy: { target: process, start: python3 app.py }
      health:
        prometheus: { url: "http://127.0.0.1:9", query: up, above: 0, for: 200ms }
    """
    conveyor("user", "add", "olga", check=True)
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.controller.tick()
            for _ in range(200):
                pending = conveyor("approvals", "--json").json()
                if pending:
                    break
                await asyncio.sleep(0.05)
            [approval] = pending
            assert approval["kind"] == "inconclusive"
            assert h.deployments("staging")[0]["status"] == "held"
            conveyor.extra_env["CONVEYOR_USER"] = "olga"
            conveyor("approve", str(approval["id"]), "--reason", "dashboards fine", check=True)
            await h.settle()
            [dep] = h.deployments("staging")
            assert dep["status"] == "succeeded"

    asyncio.run(scenario())
