"""The Argo CD connector against a fake Argo CD API (tests/connectors/fake.py): Argo CD cannot
run here, so a real HTTP server on 127.0.0.1 answers ``GET /api/v1/applications/{name}`` with
stored Applications shaped as Argo CD's API documents them (``status.history``,
``status.operationState``), and checks the bearer token."""

from __future__ import annotations

from sqlalchemy import select

from conveyor.connectors.config import Configured
from conveyor.connectors.sync import states, sync
from conveyor.store import vault
from conveyor.store.db import Store
from conveyor.store.models import DeploymentFactRow
from tests.connectors.conftest import at, changes, connector, deployments
from tests.connectors.fake import FakeApi, Reply, fixture, serving

TOKEN = "eyJhbGciOiJIUzI1NiJ9.recorded"


def argocd(store: Store, api: FakeApi) -> Configured:
    """The connector ``shop-argocd`` of application ``shop`` on the fake Argo CD, its token set."""
    shop = connector(
        store,
        "shop-argocd",
        "connectors:\n"
        "  shop-argocd:\n"
        "    type: argocd\n"
        "    application: shop\n"
        "    service: shop\n"
        "    environment: production\n"
        f"    api_url: {api.url}\n"
        "    token_secret: ARGOCD_TOKEN\n",
    )
    vault.set_connector_secret(store, "shop-argocd", "ARGOCD_TOKEN", TOKEN)
    return shop


def test_history_and_failed_syncs_become_deployments_once_each(store: Store) -> None:
    which = {"app": "first"}
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), {"error": "invalid session", "code": 16})
    api.route(
        "/api/v1/applications/shop",
        lambda _r: Reply(fixture(f"argocd/application_{which['app']}.json")),
    )
    with serving(api):
        shop = argocd(store, api)

        first = sync(store, shop)
        assert first.imported["deployments"]["added"] == 3
        found = deployments(store)
        assert found["i:shop:history-1"] == (
            "production",
            "succeeded",
            at("2024-05-01T10:00:00Z"),
            at("2024-05-01T10:03:00Z"),
        )
        assert found["i:shop:history-2"][1] == "succeeded"
        assert found["i:shop:operation-2024-05-01T16:00:00Z"] == (
            "production",
            "failed",
            at("2024-05-01T16:00:00Z"),
            at("2024-05-01T16:02:00Z"),
        )
        # Argo CD knows revisions, not commit times: no commits, so no lead time from it.
        assert changes(store, "i:shop:history-1") == []
        assert states(store)["shop-argocd"].cursor["history"] == 2

        which["app"] = "later"
        second = sync(store, shop)
        assert second.pulled == 1  # history 3 only: 1 and 2 and the failed sync were pulled
        assert "i:shop:history-3" in deployments(store)
        assert len(deployments(store)) == 4


def test_an_application_with_several_sources_records_the_commit_of_its_git_source(
    store: Store,
) -> None:
    """Argo CD gives a multi-source application (a Helm chart and a Git repository of values)
    ``revisions``, one per source, and no ``revision``: its syncs are still deployments, of
    the source revision that is a commit id (the chart's version ``1.4.2`` is not)."""
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), {"error": "invalid session", "code": 16})
    api.route("/api/v1/applications/shop", fixture("argocd/application_multisource.json"))
    with serving(api):
        shop = argocd(store, api)
        result = sync(store, shop)
    assert result.imported["deployments"]["added"] == 3
    found = deployments(store)
    assert sorted(found) == [
        "i:shop:history-1",
        "i:shop:history-2",
        "i:shop:operation-2024-05-01T16:00:00Z",
    ]
    assert found["i:shop:operation-2024-05-01T16:00:00Z"][1] == "failed"
    with store.session() as session:
        commits = dict(session.execute(select(DeploymentFactRow.key, DeploymentFactRow.sha)).all())
    assert commits["i:shop:history-2"] == "e6748cb3379fa17f7460c6e4b13e2b5a7f9b1385"
    assert commits["i:shop:operation-2024-05-01T16:00:00Z"] == (
        "dbe420b930455dbb10a37a72c0c2a4d7bfaa948d"
    )
