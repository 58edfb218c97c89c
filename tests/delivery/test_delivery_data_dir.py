"""The README's flaskr case, end to end on the process target: an app keeps its SQLite database in
`$CONVEYOR_DATA_DIR`, so what release 1 wrote is there for release 2 and after the rollback
that follows release 2's failed health check; `failures: 2` ends that check after two probes
answering 500 instead of waiting out its 60 s `within:` window. Releases are made by the real
`conveyor run`, deployed by a DeliveryController (tests/delivery/harness.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import delivery, pipeline
from tests.targets.test_target_process_data import NOTEBOOK

pytestmark = pytest.mark.integration

PRODUCTION = """
production:
  deploy: { target: process, start: python3 app.py }
  health: { http: { path: /healthz, within: 60s, interval: 50ms, failures: 2 } }
"""


def release(repo: GitRepo, conveyor: Conveyor, version: str, *, healthy: bool) -> None:
    repo.commit(
        version,
        {
            "app.py": NOTEBOOK,
            "VERSION": version,
            "HEALTHY": "yes" if healthy else "no",
            "conveyor.yml": pipeline(PRODUCTION),
        },
    )
    conveyor("run", check=True)


def test_the_database_survives_a_failed_deploy_and_its_rollback(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    release(repo, conveyor, "v1", healthy=True)

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            url = h.env("production")["url"]
            assert (await h.get(url)).text == "v1"

            release(repo, conveyor, "v2", healthy=False)
            await h.settle()
            production = h.env("production")
            assert production["version"].startswith("r1-")
            # v2 started and wrote its row, then v1 came back and read both.
            assert (await h.get(url)).text.splitlines() == ["v1", "v2", "v1"]
            _first, failed, rollback = h.deployments("production")
            assert failed["status"] == "rolled_back"
            assert "GET /healthz → 500 (expected 200)" in failed["reason"]
            assert "gave up after 2 failures in a row (failures: 2)" in failed["reason"]
            assert (rollback["kind"], rollback["status"]) == ("rollback", "succeeded")

    asyncio.run(asyncio.wait_for(scenario(), 100))
    database = conveyor.home / "deploy" / "shop" / "production" / "data" / "notebook.db"
    assert database.is_file()
