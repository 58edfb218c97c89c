"""The GitHub connector against a fake GitHub API (tests/connectors/fake.py): GitHub cannot run
here, so a real HTTP server on 127.0.0.1 answers the documented requests (Deployments,
deployment statuses, Actions workflow runs, compare, commits) with stored responses shaped
as GitHub's REST reference documents them, and checks the token, the Link pagination and
the incremental parameters."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete

from conveyor.connectors import github as github_connector
from conveyor.connectors.base import ConnectorError
from conveyor.connectors.sync import states, sync
from conveyor.store import vault
from conveyor.store.db import Store
from conveyor.store.models import ConnectorState
from tests.connectors.conftest import at, changes, connector, deployments
from tests.connectors.fake import FakeApi, Reply, Request, fixture, serving, sha

REPO = "/repos/acme/shop"
TOKEN = "ghp_recorded0123456789"
BAD_CREDENTIALS = {
    "message": "Bad credentials",
    "documentation_url": "https://docs.github.com/rest",
    "status": "401",
}


def github(state: dict[str, Any]) -> FakeApi:
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), BAD_CREDENTIALS)

    def listing(request: Request) -> Reply:
        if request.param("page") == "2":
            return Reply(fixture("github/deployments_page2.json"))
        link = f"<{{base}}{REPO}/deployments?per_page=100&page=2>"
        return Reply(
            fixture("github/deployments_page1.json"),
            headers={"Link": f'{link}; rel="next", {link}; rel="last"'},
        )

    api.route(f"{REPO}/deployments", listing)
    api.route(f"{REPO}/deployments/101/statuses", fixture("github/statuses_101.json"))
    api.route(f"{REPO}/deployments/102/statuses", fixture("github/statuses_102.json"))
    api.route(
        f"{REPO}/deployments/103/statuses",
        lambda _r: Reply(fixture(f"github/statuses_103_{state['103']}.json")),
    )
    api.route(f"{REPO}/commits/{sha(1)}", fixture("github/commit_1.json"))
    api.route(f"{REPO}/commits/{sha(2)}", fixture("github/commit_2.json"))
    api.route(f"{REPO}/compare/{sha(1)}...{sha(3)}", _compare_in_pages)
    api.route(f"{REPO}/compare/{sha(2)}...{sha(3)}", fixture("github/compare_2_3.json"))
    return api


def _compare_in_pages(request: Request) -> Reply:
    """GitHub's compare paged as it pages when asked with ``per_page``: one commit a page
    here, the changed files on the first page only."""
    comparison = fixture("github/compare_1_3.json")
    if request.param("page") == "2":
        return Reply(comparison | {"commits": comparison["commits"][1:], "files": []})
    link = f"<{{base}}{REPO}/compare/{sha(1)}...{sha(3)}?per_page=100&page=2>"
    return Reply(
        comparison | {"commits": comparison["commits"][:1]},
        headers={"Link": f'{link}; rel="next", {link}; rel="last"'},
    )


def config(url: str, extra: str = "") -> str:
    return (
        "connectors:\n"
        "  shop-github:\n"
        "    type: github\n"
        "    repository: acme/shop\n"
        "    service: shop\n"
        f"    api_url: {url}\n"
        "    token_secret: GITHUB_TOKEN\n" + extra
    )


def test_deployments_are_pulled_once_finished_with_their_commits(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pulled the day 103 was started: it is still going, not abandoned.
    monkeypatch.setattr(github_connector, "now", lambda: at("2024-05-02T09:30:00Z"))
    state = {"103": "going"}
    with serving(github(state)) as api:
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)

        first = sync(store, shop)
        assert first.imported["deployments"]["added"] == 2
        assert deployments(store) == {
            "i:shop:deployment-101": (
                "production",
                "succeeded",
                at("2024-05-01T10:00:00Z"),
                at("2024-05-01T10:12:00Z"),
            ),
            "i:shop:deployment-102": (
                "production",
                "failed",
                at("2024-05-01T15:00:00Z"),
                at("2024-05-01T15:20:00Z"),
            ),
        }
        # The first deployment of an environment brings its own commit.
        assert changes(store, "i:shop:deployment-101") == [(sha(1), at("2024-05-01T08:00:00Z"))]
        # 103 is still in progress: not imported, and the cursor stays before it.
        assert states(store)["shop-github"].cursor["deployment"] == 102
        assert len(api.asked(f"{REPO}/deployments")) == 2  # both pages, by the Link header

        state["103"] = "done"
        second = sync(store, shop)
        assert second.imported["deployments"]["added"] == 1
        assert deployments(store)["i:shop:deployment-103"][1:] == (
            "succeeded",
            at("2024-05-02T09:00:00Z"),
            at("2024-05-02T09:15:00Z"),
        )
        # The commits since the previous successful deployment of production (101).
        # Both pages of the compare were read, a commit on each, at GitHub's most a page.
        asked = api.asked(f"{REPO}/compare/{sha(1)}...{sha(3)}")
        assert [(r.param("per_page"), r.param("page")) for r in asked] == [
            ("100", None),
            ("100", "2"),
        ]
        assert changes(store, "i:shop:deployment-103") == [
            (sha(2), at("2024-05-01T14:00:00Z")),
            (sha(3), at("2024-05-02T08:00:00Z")),
        ]
        # Incremental: page 1 already reached what was pulled; page 2 is not asked again.
        pages = [r.param("page") for r in api.asked(f"{REPO}/deployments")]
        assert pages == [None, "2", None]
        assert len(api.asked(f"{REPO}/deployments/101/statuses")) == 1

        third = sync(store, shop)
        assert third.pulled == 0
        assert third.imported["deployments"]["added"] == 0


def test_pulling_the_same_pages_again_changes_nothing(store: Store) -> None:
    with serving(github({"103": "done"})) as api:
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
        sync(store, shop)
        before = deployments(store)
        with store.write() as w:  # forget the cursor: everything is pulled again
            w.session.execute(delete(ConnectorState))
        again = sync(store, shop)
        assert again.pulled == 3
        assert again.imported["deployments"] == {"added": 0, "present": 3, "changes_added": 0}
        assert deployments(store) == before


def test_a_refused_token_stores_nothing_and_keeps_the_cursor(store: Store) -> None:
    with serving(github({"103": "done"})) as api:
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", "ghp_revoked")
        with pytest.raises(ConnectorError, match=r"refused \(401\)"):
            sync(store, shop)
        assert deployments(store) == {}
        kept = states(store)["shop-github"]
        assert kept.cursor == {}
        assert kept.synced_at is None
        assert "refused (401)" in str(kept.error)


def test_a_token_not_set_is_named_with_the_command_that_sets_it(store: Store) -> None:
    shop = connector(store, "shop-github", config("http://127.0.0.1:9"))
    with pytest.raises(ConnectorError, match="secret GITHUB_TOKEN is not set") as caught:
        sync(store, shop)
    assert caught.value.hint == "set it with `conveyor connectors secret shop-github GITHUB_TOKEN`"


def test_the_token_is_a_secret_no_pipeline_can_resolve(store: Store) -> None:
    vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
    assert vault.connector_secret(store, "shop-github", "GITHUB_TOKEN") == TOKEN
    # Not a secret of any service, nor listed with one: only the connector reads it back.
    assert vault.resolve(store, "shop", ["GITHUB_TOKEN"]) == {}
    assert vault.resolve(store, "shop-github", ["GITHUB_TOKEN"]) == {}
    assert vault.list_secrets(store, "shop-github") == []
    assert vault.connector_secret(store, "other", "GITHUB_TOKEN") is None


def test_workflow_runs_are_deployments_pulled_from_where_the_last_pull_stopped(
    store: Store,
) -> None:
    runs = {"which": "first"}
    with serving(github({})) as api:
        path = f"{REPO}/actions/workflows/deploy.yml/runs"
        api.route(path, lambda _r: Reply(fixture(f"github/runs_{runs['which']}.json")))
        extra = "    deployments: false\n    workflow: deploy.yml\n"
        shop = connector(store, "shop-github", config(api.url, extra))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)

        first = sync(store, shop)
        assert first.imported["deployments"]["added"] == 2
        found = deployments(store)
        assert found["i:shop:run-10"][:2] == ("production", "failed")
        assert found["i:shop:run-20"][:2] == ("production", "succeeded")
        assert "i:shop:run-30" not in found  # still running
        assert api.asked(path)[0].param("created") is None

        runs["which"] = "second"
        second = sync(store, shop)
        # Asked again from the creation of the run still going.
        assert api.asked(path)[1].param("created") == ">=2024-05-02T09:00:00Z"
        assert second.imported["deployments"]["added"] == 1
        assert changes(store, "i:shop:run-30") == [(sha(3), at("2024-05-02T08:00:00Z"))]


def test_environments_not_mapped_are_skipped_without_asking_for_their_statuses(
    store: Store,
) -> None:
    with serving(github({"103": "done"})) as api:
        extra = "    environments: {staging: staging}\n"
        shop = connector(store, "shop-github", config(api.url, extra))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
        done = sync(store, shop)
        assert (done.pulled, done.skipped) == (0, 3)
        assert deployments(store) == {}
        assert not [r for r in api.requests if r.path.endswith("/statuses")]
        assert states(store)["shop-github"].cursor["deployment"] == 103

        mapped = connector(
            store, "shop-github", config(api.url, "    environments: {production: prod}\n")
        )
        with store.write() as w:
            w.session.execute(delete(ConnectorState))
        sync(store, mapped)
        assert {env for env, *_ in deployments(store).values()} == {"prod"}


def test_a_next_page_on_another_host_is_refused_so_the_token_stays_home(store: Store) -> None:
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), BAD_CREDENTIALS)
    elsewhere = '<https://collector.example.net/steal?page=2>; rel="next"'
    api.route(
        f"{REPO}/deployments",
        lambda _r: Reply(fixture("github/deployments_page2.json"), headers={"Link": elsewhere}),
    )
    with serving(api):
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
        with pytest.raises(ConnectorError, match="the next page is elsewhere"):
            sync(store, shop)
        assert deployments(store) == {}


# --- shapes seen in responses recorded from api.github.com ------------------------------------
# Client libraries' test suites (octokit.rb, github3.py, PyGithub) publish responses recorded
# from the real API. Two shapes in them broke the connector: a deployment given a `success`
# status again years after it ended, and deployments that never get a final status. These
# tests build those shapes from the documented examples above (the recordings themselves are
# not copied here).


def _deployment(number: int, created: str) -> dict[str, Any]:
    template = fixture("github/deployments_page2.json")[0]
    return template | {"id": number, "created_at": created, "updated_at": created}


def _status(number: int, state: str, created: str) -> dict[str, Any]:
    template = fixture("github/statuses_101.json")[0]
    return template | {"id": number, "state": state, "created_at": created, "updated_at": created}


def test_a_deployment_ends_at_its_first_success_and_one_never_given_a_status_is_skipped(
    store: Store,
) -> None:
    """Deployment 201 got a `success` status the day after it started, and the same status
    again every year after (github3.py's recorded deployment 801 has five, 2014 to 2018): it
    ended at the first, not four years later. Deployment 200, years old, never got a status
    (octokit.rb recorded `[]` for one): it is skipped, not waited for, so the cursor moves on."""
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), BAD_CREDENTIALS)
    api.route(
        f"{REPO}/deployments",
        [_deployment(201, "2014-02-24T02:22:44Z"), _deployment(200, "2014-02-20T10:00:00Z")],
    )
    reposted = [
        _status(2000 + year, "success", f"{year}-01-01T00:00:00Z")
        for year in (2018, 2017, 2016, 2015)
    ]
    first = _status(2014, "success", "2014-02-25T02:57:29Z")
    pending = _status(2013, "pending", "2014-02-24T02:23:00Z")
    api.route(f"{REPO}/deployments/201/statuses", [*reposted, first, pending])
    api.route(f"{REPO}/deployments/200/statuses", [])
    commit = fixture("github/commit_1.json")
    api.route(f"{REPO}/commits/{commit['sha']}", commit)
    with serving(api):
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
        done = sync(store, shop)
        assert (done.pulled, done.skipped) == (1, 1)
        (key, (environment, result, started, finished)), *rest = deployments(store).items()
        assert rest == []
        assert (key, environment, result) == ("i:shop:deployment-201", "production", "succeeded")
        assert (started, finished) == (at("2014-02-24T02:22:44Z"), at("2014-02-25T02:57:29Z"))
        assert states(store)["shop-github"].cursor["deployment"] == 201
        again = sync(store, shop)
        assert again.pulled == 0
        assert len(api.asked(f"{REPO}/deployments/201/statuses")) == 1


def test_a_queued_deployment_is_waited_for_then_given_up_after_30_days(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployment 300 is `queued` (PyGithub recorded one queued three times): it may still end,
    so it holds the cursor back; with nothing new 30 days after its newest status, it is given
    up and the cursor moves past it."""
    api = FakeApi(("Authorization", f"Bearer {TOKEN}"), BAD_CREDENTIALS)
    api.route(f"{REPO}/deployments", [_deployment(300, "2020-08-26T15:00:00Z")])
    queued = [
        _status(3003, "queued", "2020-08-26T15:21:32Z"),
        _status(3002, "queued", "2020-08-26T15:10:00Z"),
        _status(3001, "queued", "2020-08-26T15:00:05Z"),
    ]
    api.route(f"{REPO}/deployments/300/statuses", queued)
    with serving(api):
        shop = connector(store, "shop-github", config(api.url))
        vault.set_connector_secret(store, "shop-github", "GITHUB_TOKEN", TOKEN)
        monkeypatch.setattr(github_connector, "now", lambda: at("2020-08-27T15:00:00Z"))
        waiting = sync(store, shop)
        assert (waiting.pulled, waiting.skipped) == (0, 0)
        assert states(store)["shop-github"].cursor.get("deployment") != 300

        monkeypatch.setattr(github_connector, "now", lambda: at("2020-09-26T15:21:33Z"))
        given_up = sync(store, shop)
        assert (given_up.pulled, given_up.skipped) == (0, 1)
        assert states(store)["shop-github"].cursor["deployment"] == 300
        assert deployments(store) == {}
        assert len(api.asked(f"{REPO}/deployments/300/statuses")) == 2
