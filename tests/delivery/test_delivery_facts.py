"""What DORA will read about Conveyor's own deployments: one fact per deployment that
happened, with its commit range, failure time and what a rollback undid."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from conveyor.store.models import ChangeFactRow, DeploymentFactRow
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration

PRODUCTION = f"""
production:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def test_each_deployment_becomes_a_fact_with_its_commit_range(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    first = release(repo, conveyor, "v1", pipeline(PRODUCTION))
    assert first == 1

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            # Two commits, then one release: both commits are in its range.
            repo.commit("docs only", {"NOTES": "x"})
            release(repo, conveyor, "v2", pipeline(PRODUCTION))
            await h.settle()
            release(repo, conveyor, "v3", pipeline(PRODUCTION), healthy=False)
            await h.settle()
            with h.store.session() as session:
                facts = session.scalars(
                    select(DeploymentFactRow).order_by(DeploymentFactRow.id)
                ).all()
                summary = [(f.key, f.kind, f.result, f.rollback_of) for f in facts]
                assert summary == [
                    ("c1", "deploy", "succeeded", None),
                    ("c2", "deploy", "succeeded", None),
                    ("c4", "rollback", "succeeded", "c3"),
                    ("c3", "deploy", "rolled_back", None),
                ]
                by_key = {f.key: f for f in facts}
                assert by_key["c3"].failed_at is not None
                assert by_key["c3"].failed_at <= by_key["c4"].finished_at
                assert by_key["c1"].tier == "production"
                assert set(by_key["c2"].stages) >= {"run_started", "run_finished"}
                ranges = {
                    key: [
                        c.sha
                        for c in session.scalars(
                            select(ChangeFactRow).where(ChangeFactRow.fact_id == by_key[key].id)
                        )
                    ]
                    for key in ("c1", "c2", "c3", "c4")
                }
            log = repo.git("log", "--format=%H").split()
            # Newest first: v3, v2, "docs only", v1.
            assert ranges["c1"] == [log[3]]
            assert sorted(ranges["c2"]) == sorted([log[1], log[2]])
            assert ranges["c3"] == []  # failed: no lead time
            assert ranges["c4"] == []  # rollbacks bring no new commits

    asyncio.run(scenario())
