"""DORA's definitions of 2024 on the README's own production example, through the real
controller and process target: a blue-green candidate that fails its health check never takes
traffic, so it is no change failure ("caught before production traffic") and borrows no
recovery time from another deployment's rollback; a release that took traffic and then failed
its verification is the change failure, recovered by its own rollback.

The README's production environment also checks Prometheus; that check is left out here (the
HTTP health check stands for it): what matters is where a check fails, before or after the
switch."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration


def production(verify: str) -> str:
    """README's production environment (blue-green, a health check, rollback on failure)."""
    return f"""
    production:
      tier: production
      deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
      {HEALTH}
      verify:
        - run: {verify}
      on_failure: rollback
    """


def test_a_candidate_stopped_before_the_switch_is_caught_not_a_change_failure(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    release(repo, conveyor, "v1", pipeline(production("'true'")))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            # v2's candidate fails its health check: v1 keeps serving, nothing is rolled back.
            release(repo, conveyor, "v2", pipeline(production("'true'")), healthy=False)
            await h.settle()
            # v3 takes traffic, then fails its verification: rolled back to v1.
            release(repo, conveyor, "v3", pipeline(production("'exit 3'")))
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v1"
            v1, v2, v3, rollback = h.deployments("production")
            assert (v1["status"], v2["status"], v3["status"]) == (
                "succeeded",
                "failed",
                "rolled_back",
            )
            assert "kept serving" in v2["reason"]
            assert (rollback["kind"], rollback["rollback_of"]) == ("rollback", v3["id"])

    asyncio.run(scenario())
    report = conveyor("dora", "--since", "1d", "--json", "--explain", check=True).json()
    m = report["metrics"]
    # Deployments that served: v1 and v3 (v2 never did); v3 needed intervention: 1 of 2.
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["deployments"]) == (1, 2)
    # One caught of the three that finished: 1/3 (rounded to 6 places in the JSON).
    assert m["caught_before_traffic"]["value"] == 1.0
    assert m["caught_before_traffic"]["share"] == pytest.approx(1 / 3, abs=1e-6)
    cfr = {i["id"]: i["how"] for i in m["change_failure_rate"]["explanation"]}
    assert cfr["2"].startswith("excluded: caught before production traffic")
    assert cfr["3"].startswith("failed: ")
    # One failure to recover from, v3's, restored by its own rollback (deployment 4).
    recoveries = m["recovery_time"]["explanation"]
    assert [i["id"] for i in recoveries] == ["3"]
    assert "healthy rollback 4 in production" in recoveries[0]["how"]
    # The summary (without --explain) tells the same.
    plain = conveyor("dora", "--since", "1d", "--json", check=True).json()["metrics"]
    assert plain["change_failure_rate"]["failed"] == 1
    assert plain["caught_before_traffic"]["caught"] == 1
