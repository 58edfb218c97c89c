"""The GitLab connector against a fake GitLab API (tests/connectors/fake.py): GitLab cannot run
here, so a real HTTP server on 127.0.0.1 answers the documented requests (project deployments,
compare, commits) with GitLab's documented example responses (fixtures/README.md) set to this
scenario, and checks the PRIVATE-TOKEN header, the X-Next-Page pagination and
``updated_after``. The compare's commits carry ``created_at`` only, as GitLab documents them:
the commit times come from it."""

from __future__ import annotations

from typing import Any

from conveyor.connectors.sync import states, sync
from conveyor.store import vault
from conveyor.store.db import Store
from tests.connectors.conftest import at, changes, connector, deployments
from tests.connectors.fake import FakeApi, Reply, Request, fixture, serving, sha

PROJECT = "/api/v4/projects/acme%2Fshop"
TOKEN = "glpat-recorded0123456789"


def gitlab(state: dict[str, Any]) -> FakeApi:
    api = FakeApi(("PRIVATE-TOKEN", TOKEN), {"message": "401 Unauthorized"})

    def listing(request: Request) -> Reply:
        assert request.param("order_by") == "updated_at"  # what updated_after requires
        assert request.param("sort") == "asc"
        state.setdefault("asked", []).append(request.param("updated_after"))
        if request.param("updated_after"):
            return Reply(fixture("gitlab/deployments_later.json"), headers={"X-Next-Page": ""})
        if request.param("page") == "2":
            return Reply(fixture("gitlab/deployments_page2.json"), headers={"X-Next-Page": ""})
        return Reply(fixture("gitlab/deployments_page1.json"), headers={"X-Next-Page": "2"})

    # The project's path is one URL-encoded segment, as GitLab documents.
    api.route(f"{PROJECT}/deployments", listing)
    api.route(f"{PROJECT}/repository/commits/{sha(11)}", fixture("gitlab/commit_11.json"))

    def compare(request: Request) -> Reply:
        assert (request.param("from"), request.param("to")) == (sha(11), sha(13))
        return Reply(fixture("gitlab/compare_11_13.json"))

    api.route(f"{PROJECT}/repository/compare", compare)
    return api


def test_deployments_are_pulled_by_update_time_with_their_commits(store: Store) -> None:
    state: dict[str, Any] = {}
    with serving(gitlab(state)) as api:
        shop = connector(
            store,
            "shop-gitlab",
            "connectors:\n"
            "  shop-gitlab:\n"
            "    type: gitlab\n"
            "    project: acme/shop\n"
            "    service: shop\n"
            f"    api_url: {api.url}\n"
            "    token_secret: GITLAB_TOKEN\n",
        )
        vault.set_connector_secret(store, "shop-gitlab", "GITLAB_TOKEN", TOKEN)

        first = sync(store, shop)
        assert first.imported["deployments"]["added"] == 2
        assert deployments(store) == {
            "i:shop:deployment-41": (
                "production",
                "succeeded",
                at("2024-05-01T10:01:00Z"),
                at("2024-05-01T10:10:00Z"),
            ),
            "i:shop:deployment-42": (
                "production",
                "failed",
                at("2024-05-01T15:01:00Z"),
                at("2024-05-01T15:20:00Z"),
            ),
        }
        assert changes(store, "i:shop:deployment-41") == [(sha(11), at("2024-05-01T08:00:00Z"))]
        assert [r.param("page") for r in api.requests if r.path.endswith("/deployments")] == [
            "1",
            "2",
        ]
        # 43 was running: it comes back once GitLab updates it.
        assert states(store)["shop-gitlab"].cursor["updated_after"] == "2024-05-02T09:01:00Z"

        second = sync(store, shop)
        assert state["asked"][-1] == "2024-05-02T09:01:00Z"
        assert second.imported["deployments"]["added"] == 1
        assert changes(store, "i:shop:deployment-43") == [
            (sha(12), at("2024-05-01T14:00:00Z")),
            (sha(13), at("2024-05-02T08:00:00Z")),
        ]
        again = sync(store, shop)  # the same page once more: already present
        assert again.imported["deployments"] == {"added": 0, "present": 1, "changes_added": 0}
        assert len(deployments(store)) == 3
