"""Release bundles are pruned after each deployment: old ones go, the ones an environment serves
or may roll back to stay (with the newest CONVEYOR_KEEP_BUNDLES of the service)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.delivery.bundles import KEEP_DEFAULT
from conveyor.delivery.controller import DeliveryController
from conveyor.errors import ConveyorError
from conveyor.runner.artifacts import ArtifactStore
from conveyor.settings import Settings as ConveyorSettings
from conveyor.store.db import Settings, open_store
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

STAGED = f"""
staging:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
production:
  after: staging
  approval: {{ approvers: [ops], required: 1 }}
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
  on_failure: rollback
"""


def bundles(home: Path) -> set[int]:
    base = home / "releases" / "shop"
    return {int(p.name) for p in base.iterdir() if p.name.isdigit()} if base.is_dir() else set()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_old_bundles_go_and_those_serving_or_needed_for_rollback_stay(
    repo: GitRepo, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_KEEP_BUNDLES", "1")
    yml = pipeline(STAGED)
    conveyor("user", "add", "olga", "--group", "ops", check=True)

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            release(repo, conveyor, "v1", yml)
            await h.settle()
            [approval] = conveyor("approvals", "--json").json()
            conveyor.extra_env["CONVEYOR_USER"] = "olga"
            conveyor("approve", str(approval["id"]), check=True)
            await h.settle()
            assert h.env("production")["version"].startswith("r1-")
            # Three more releases go to staging; production keeps serving r1 (no approval).
            for version in ("v2", "v3", "v4"):
                release(repo, conveyor, version, yml)
                await h.settle()
            assert h.env("staging")["version"].startswith("r4-")
            # r1: production serves it. r4: staging serves it and it is the newest. r2 and r3
            # are needed by nobody: their production deployments wait for an approval, and
            # would export their bundle again if they started.
            assert bundles(conveyor.home) == {1, 4}
            # r5 fails its health check in staging: the rollback to r4 finds its bundle.
            release(repo, conveyor, "v5", yml, healthy=False)
            await h.settle()
            staging = h.env("staging")
            assert staging["version"].startswith("r4-")
            assert (await h.get(staging["url"])).text == "v4"
            *_, failed, rollback = h.deployments("staging")
            assert (failed["status"], rollback["status"]) == ("rolled_back", "succeeded")
            assert bundles(conveyor.home) == {1, 4, 5}

    asyncio.run(scenario())


def test_keep_bundles_must_be_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as err:
        ConveyorSettings.from_env({"CONVEYOR_KEEP_BUNDLES": "many"})
    assert "CONVEYOR_KEEP_BUNDLES must be a whole number" in err.value.message
    # A controller given none keeps the default number; the server gives it its setting.
    store = open_store(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}"))
    try:
        controller = DeliveryController(store, ArtifactStore(tmp_path / "artifacts"))
        assert controller.keep_bundles == KEEP_DEFAULT
        given = ConveyorSettings.from_env({"CONVEYOR_KEEP_BUNDLES": "3"}).keep_bundles
        assert (
            DeliveryController(store, ArtifactStore(tmp_path), keep_bundles=given).keep_bundles == 3
        )
    finally:
        store.close()
