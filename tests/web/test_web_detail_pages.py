"""The deployments list and the deployment, incident and compare pages in a real Chromium
against a real `conveyor server`: a release whose health check fails in production is rolled
back by itself (a real process target, a real HTTP check), which opens and resolves an
incident; an alert opens another. The Alertmanager alert is posted as Alertmanager's documented
webhook body (version 4): the page under test only shows what the alert said."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.server.test_server_deployment_pages import shop
from tests.server.test_server_run_list import commit_by
from tests.serverproc import until
from tests.web.conftest import Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def files(version: str, healthy: bool) -> dict[str, str]:
    return shop(version, healthy, environment="production")


def alert_body(starts: dt.datetime) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one firing alert about the shop."""
    return {
        "version": "4",
        "groupKey": "{}:{alertname='CheckoutSlow'}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "conveyor",
        "groupLabels": {"alertname": "CheckoutSlow"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "CheckoutSlow",
                    "service": "shop",
                    "environment": "production",
                    "severity": "page",
                    # The rule names the deployment it watches: the blame is explicit.
                    "deployment": "2",
                },
                "annotations": {"summary": "checkout takes 4 s at p99"},
                "startsAt": starts.isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example:9090/graph?g0.expr=slow",
                "fingerprint": "c0ffee01",
            }
        ],
    }


def deployments(web: Web) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = web.api.get("/deployments").json()
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """Release 1 (by Ada) serves production; release 2 (by Grace) fails its health check and is
    rolled back (deployments 1, 2 and the rollback 3), which opens incident 1 and resolves it;
    an alert about deployment 2 opens incident 2, still open."""
    web = Web(Path(tmp_path_factory.mktemp("details")))
    try:
        repo = web.service("shop", files("v1", True), message="v1: the first shop")
        assert web.wait_run(web.trigger("shop")["id"])["status"] == "succeeded", web.logs()
        until(lambda: [d["status"] for d in deployments(web)] == ["succeeded"], 30, "v1 live")
        commit_by(
            repo, "Grace Hopper <grace@example.com>", "v2: break the health", files("v2", False)
        )
        assert web.wait_run(web.trigger("shop")["id"])["status"] == "succeeded", web.logs()

        def rolled_back() -> bool:
            return [(d["kind"], d["status"]) for d in deployments(web)] == [
                ("rollback", "succeeded"),
                ("deploy", "rolled_back"),
                ("deploy", "succeeded"),
            ]

        until(rolled_back, 60, "release 2 to be rolled back")
        until(
            lambda: web.api.get("/incidents/1").json()["status"] == "resolved",
            30,
            "the rollback to resolve incident 1",
        )
        starts = dt.datetime.now(dt.UTC).replace(microsecond=0)
        r = web.api.post("/hooks/alertmanager", json=alert_body(starts))
        assert r.status_code == 200, r.text
        assert r.json()["alerts"][0]["incident"] == 2, r.text
        yield web
    finally:
        web.close()


def rows(page: Page) -> list[str]:
    expect(page.locator(".list-status")).not_to_be_empty()
    ids: list[str] = page.locator(".deployments-table tbody tr").evaluate_all(
        "rows => rows.map((r) => r.dataset.id)"
    )
    return ids


def expect_rows(page: Page, ids: list[int]) -> None:
    expect(page.locator(".deployments-table tbody tr")).to_have_count(len(ids))
    assert rows(page) == [str(i) for i in ids]


def test_deployments_are_listed_filtered_in_the_url_and_paged_both_ways(
    site: Web, page: Page
) -> None:
    # The releases list leads to the deployments list.
    signed_in(page, site, site.admin_token, next="/releases")
    page.get_by_role("link", name="Their deployments").click()
    expect(page).to_have_url(f"{site.url}/deployments")
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    # The main navigation has it too, marked as the page shown.
    main_nav = page.get_by_role("navigation", name="Main")
    expect(main_nav.locator('a[aria-current="page"]')).to_have_text("Deployments")
    expect_rows(page, [3, 2, 1])
    failed = page.locator('tr[data-id="2"]')
    expect(failed).to_contain_text("rolled back")
    expect(failed).to_contain_text("v2: break the health")
    expect(failed).to_contain_text("Grace Hopper")
    expect(failed.get_by_role("link", name="production")).to_have_attribute(
        "href", "/services/shop/environments/production"
    )
    expect(page.locator('tr[data-id="3"]')).to_contain_text("rollback")
    # Times show with their zone.
    expect(failed.locator("time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+"))

    page.get_by_label("Status").select_option("succeeded")
    expect(page).to_have_url(re.compile(r"/deployments\?status=succeeded$"))
    expect_rows(page, [3, 1])
    page.get_by_label("Author").fill("hopper")
    page.get_by_label("Author").press("Enter")
    expect(page.locator(".deployments-list")).to_contain_text("No deployments match these filters.")
    page.get_by_label("Status").select_option("")
    expect_rows(page, [2])
    page.reload()
    expect_rows(page, [2])
    expect(page.get_by_label("Author")).to_have_value("hopper")
    page.go_back()
    expect(page).to_have_url(re.compile(r"status=succeeded&author=hopper$"))
    page.get_by_role("button", name="Clear filters").click()
    search = page.get_by_label("Search")
    search.fill("first shop")
    search.press("Enter")
    expect_rows(page, [3, 1])
    today = dt.datetime.now().date()  # the browser's zone is the machine's
    page.goto(f"{site.url}/deployments?since={(today + dt.timedelta(days=1)).isoformat()}")
    expect(page.locator(".deployments-list")).to_contain_text("No deployments match these filters.")

    # Pages of one: older, older, then back newer, newer, to the newest.
    page.goto(f"{site.url}/deployments?per_page=1")
    expect_rows(page, [3])
    expect(page.get_by_role("link", name="Newer deployments")).to_have_count(0)
    page.get_by_role("link", name="Older deployments").click()
    expect_rows(page, [2])
    page.get_by_role("link", name="Older deployments").click()
    expect_rows(page, [1])
    expect(page.get_by_role("link", name="Older deployments")).to_have_count(0)
    page.get_by_role("link", name="Newer deployments").click()
    expect(page).to_have_url(re.compile(r"after=1"))
    expect_rows(page, [2])
    page.get_by_role("link", name="Newer deployments").click()
    expect_rows(page, [3])
    expect(page.get_by_role("link", name="Newer deployments")).to_have_count(0)
    shot(page, "deployments")

    page.get_by_role("link", name="#3").click()
    expect(page).to_have_url(f"{site.url}/deployments/3")
    expect(
        page.get_by_role("heading", name=re.compile("Rollback #3 to production"))
    ).to_be_visible()


def test_a_deployment_page_shows_its_target_status_checks_log_and_the_apps_output(
    site: Web, page: Page
) -> None:
    signed_in(page, site, site.admin_token, next="/deployments/2")
    expect(
        page.get_by_role("heading", name=re.compile("Deployment #2 to production"))
    ).to_be_visible()
    main = page.get_by_role("main")
    expect(main.locator(".page-head")).to_contain_text("rolled back")
    what = page.get_by_role("region", name="What and where")
    expect(what).to_contain_text("process, recreate")
    expect(what.get_by_role("link", name=re.compile(r"^r2-"))).to_have_attribute(
        "href", "/releases/2"
    )
    expect(what).to_contain_text("Grace Hopper")
    expect(what.get_by_role("link", name=re.compile("release 1"))).to_have_attribute(
        "href", "/releases/1/compare/2"
    )
    # Each status it went through, in order, with when.
    history = page.get_by_role("list", name="Status history")
    statuses = history.locator("li").evaluate_all("items => items.map((i) => i.dataset.status)")
    assert statuses[0] == "queued", statuses
    assert (
        statuses.index("deploying") < statuses.index("checking") < statuses.index("rolling_back")
    ), statuses
    assert statuses[-1] == "rolled_back", statuses
    expect(history.locator("li").first.locator("time .time-abs")).to_be_visible()
    # The failed check with its result.
    check = page.get_by_role("list", name="Checks").locator("[data-outcome=fail]").first
    expect(check).to_contain_text("503")
    # What the target reported, and the app's own output.
    log = page.get_by_role("region", name="Deployment log").locator("pre")
    expect(log).to_contain_text("deploying r2-")
    output = page.get_by_role("region", name="The app’s output").locator("pre")
    expect(output).to_contain_text("[conveyor] starting r2-")
    page.get_by_role("link", name="Incident #1").click()
    expect(page).to_have_url(f"{site.url}/incidents/1")
    shot(page, "incident-1")

    # The rollback says what it undid.
    page.goto(f"{site.url}/deployments/3")
    expect(page.get_by_role("region", name="What and where")).to_contain_text("Undoes")
    page.get_by_role("link", name="deployment #2").click()
    expect(page).to_have_url(f"{site.url}/deployments/2")

    page.goto(f"{site.url}/deployments/99")
    expect(page.get_by_role("alert")).to_contain_text("there is no deployment 99")
    page.goto(f"{site.url}/deployments/two")
    expect(page.get_by_role("alert")).to_contain_text('"two" is not a deployment number')


def test_an_incident_page_shows_its_alert_blame_and_times_and_can_be_resolved(
    site: Web, page: Page
) -> None:
    # The one the failed check opened and the rollback resolved: blamed on deployment 2.
    signed_in(page, site, site.admin_token, next="/incidents/1")
    when = page.get_by_role("region", name="When")
    expect(when.locator(".recovery")).to_have_text(re.compile(r"^\d+(m|s)"))
    expect(when.locator("time .time-abs").first).to_have_text(
        re.compile(r"^\(\d{4}-\d\d-\d\d \d\d:\d\d \S+\)$")
    )
    blame = page.get_by_role("region", name="Blamed on")
    expect(blame.get_by_role("link", name="Deployment #2")).to_have_attribute(
        "href", "/deployments/2"
    )
    expect(blame.get_by_role("link", name=re.compile(r"^r2-"))).to_have_attribute(
        "href", "/releases/2"
    )
    expect(page.get_by_role("region", name="Alert")).to_contain_text("No alert")
    # The list links each incident to its page.
    page.goto(f"{site.url}/incidents?status=all")
    page.get_by_role("link", name="checkout takes 4 s").click()
    expect(page).to_have_url(f"{site.url}/incidents/2")

    # The alert's: what it said, still open (no recovery time yet), then resolved here.
    expect(page.get_by_role("heading", name=re.compile("CheckoutSlow"))).to_be_visible()
    alert = page.get_by_role("region", name="Alert")
    expect(alert).to_contain_text("checkout takes 4 s at p99")
    expect(alert.get_by_role("list", name="Labels")).to_contain_text("severity=page")
    expect(alert.get_by_role("link", name="The alert’s graph")).to_have_attribute(
        "href", "http://prometheus.example:9090/graph?g0.expr=slow"
    )
    posted = site.api.get("/incidents/2").json()["alert"]["starts_at"]
    starts = dt.datetime.fromisoformat(posted)
    # In the browser's zone (the machine's), with the zone's name.
    local = starts.astimezone()
    expect(alert.locator("time .time-abs")).to_have_text(
        f"({local.strftime('%Y-%m-%d %H:%M')} {local.tzname()})"
    )
    blame = page.get_by_role("region", name="Blamed on")
    expect(blame.get_by_role("link", name="Deployment #2")).to_have_attribute(
        "href", "/deployments/2"
    )
    expect(blame).to_contain_text("named by whoever opened it")
    when = page.get_by_role("region", name="When")
    expect(when.locator(".recovery")).to_have_text("still open")
    shot(page, "incident-open")
    page.get_by_role("button", name="Resolve").click()
    page.locator("dialog#confirm").get_by_role("button", name="Resolve").click()
    expect(page.locator(".page-head")).to_contain_text("resolved")
    expect(when.locator(".recovery")).not_to_have_text("still open")
    expect(page.get_by_role("button", name="Resolve")).to_have_count(0)
    # The button is gone: the keyboard stays on the page, at the incident's status.
    expect(page.locator(".incident-status")).to_be_focused()
    assert site.api.get("/incidents/2").json()["status"] == "resolved"


def test_a_read_only_viewer_sees_an_incident_without_a_resolve_button(
    site: Web, page: Page
) -> None:
    viewer = site.token("incident-viewer", "read")
    signed_in(page, site, viewer, next="/incidents/1")
    expect(page.get_by_role("heading", name=re.compile("Incident #1"))).to_be_visible()
    expect(page.get_by_role("main").get_by_role("button")).to_have_count(0)
    page.goto(f"{site.url}/incidents/77")
    expect(page.get_by_role("alert")).to_contain_text("77")


def test_two_releases_compare_from_the_release_page(site: Web, page: Page) -> None:
    signed_in(page, site, site.admin_token, next="/releases/2")
    page.get_by_role("link", name="Compare with the previous release, #1").click()
    expect(page).to_have_url(f"{site.url}/releases/1/compare/2")
    expect(page.locator(".compare-summary")).to_contain_text("brings 1 commit by 1 author")
    commits = page.get_by_role("list", name="Commits brought")
    expect(commits).to_contain_text("v2: break the health")
    expect(commits).to_contain_text("Grace Hopper")
    expect(page.get_by_role("list", name="Authors")).to_contain_text("grace@example.com")
    base = page.get_by_role("region", name=re.compile("^From r1-"))
    head = page.get_by_role("region", name=re.compile("^To r2-"))
    for side, version in ((base, "r1-"), (head, "r2-")):
        expect(side.get_by_role("link", name="dist/version.txt")).to_be_visible()
        expect(side.get_by_role("list", name=re.compile(f"^Jobs of {version}"))).to_contain_text(
            "build"
        )
    expect(base.locator("[data-outcome=pass]").first).to_be_visible()
    expect(head.locator("[data-outcome=fail]").first).to_contain_text("503")
    expect(base).to_contain_text("Serving in production")
    shot(page, "compare")

    # Swapped: what going back to release 1 takes away.
    page.get_by_role("link", name="Swap").click()
    expect(page).to_have_url(f"{site.url}/releases/2/compare/1")
    expect(page.locator(".compare-summary")).to_contain_text("takes away 1 commit")
    expect(page.get_by_role("list", name="Commits taken away")).to_contain_text("v2: break")
    # Choosing another release to compare with goes there.
    page.get_by_label("To", exact=True).select_option("2")
    expect(page).to_have_url(f"{site.url}/releases/2/compare/2")
    expect(page.locator(".compare-summary")).to_contain_text("brings no commit")

    page.goto(f"{site.url}/releases/1/compare/9")
    expect(page.get_by_role("alert")).to_contain_text("there is no release 9")
