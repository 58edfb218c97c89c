"""The environment page in a real Chromium against a real `conveyor server`: roll back by hand
through the confirmation dialog (cancel first, then confirm) and see the history show it;
hold and unhold; a read-only viewer sees the same page without buttons."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.serverproc import until
from tests.web.conftest import APP, HEALTH, Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PRODUCTION = f"""\
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""
LONG = 30_000
PAGE = "/services/shop/environments/production"


def files(version: str) -> dict[str, str]:
    return {"app.py": APP, "VERSION": version, "HEALTHY": "yes", "conveyor.yml": PRODUCTION}


def production(web: Web) -> dict[str, Any]:
    [env] = web.api.get("/environments", params={"service": "shop"}).json()
    found: dict[str, Any] = env
    return found


def serving(web: Web, release: int) -> dict[str, Any] | None:
    env = production(web)
    return env if env["release"] == release and env["healthy"] and not env["queue"] else None


def two_releases(web: Web) -> None:
    """Production has served release 1, then release 2 (both healthy)."""
    repo = web.service("shop", files("v1"), message="v1")
    for number in (1, 2):
        if number == 2:
            repo.commit("v2", files("v2"))
        run = web.trigger("shop")
        assert web.wait_run(run["id"])["status"] == "succeeded"
        until(lambda n=number: serving(web, n), 30, f"production to serve release {number}")


def test_roll_back_by_hand_with_confirmation_then_hold_and_unhold(web: Web, page: Page) -> None:
    two_releases(web)
    web.cli("user", "add", "rita")
    signed_in(page, web, web.token("rita-browser", "trigger", user="rita"), next=PAGE)

    expect(page.locator("#current-release")).to_have_text(re.compile(r"^r2-"))
    expect(page.locator("#previous-release")).to_have_text(re.compile(r"^r1-"))
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(2)
    choice = page.get_by_label("Roll back to")
    expect(choice).to_have_value("1")
    expect(choice.locator("option")).to_have_text([re.compile(r"^r1-.*previous release")])
    shot(page, "environment")

    # Cancelling the dialog changes nothing.
    page.get_by_role("button", name="Roll back…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(re.compile(r"Roll back shop production from r2-\w+ to r1-"))
    shot(page, "environment-confirm-rollback")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert production(web)["release"] == 2
    assert len(web.api.get("/deployments", params={"service": "shop"}).json()) == 2

    page.get_by_role("button", name="Roll back…").click()
    page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Roll back to r1-")).click()
    newest = history.first
    expect(newest).to_have_attribute("data-kind", "rollback")
    expect(newest).to_contain_text("rollback by rita")
    expect(newest).to_contain_text("succeeded", timeout=LONG)
    expect(page.locator("#current-release")).to_have_text(re.compile(r"^r1-"), timeout=LONG)
    expect(page.locator("#previous-release")).to_have_text(re.compile(r"^r2-"))
    env = until(lambda: serving(web, 1), 30, "production to serve release 1 again")
    assert httpx.get(env["url"], timeout=5).text == "v1"
    shot(page, "environment-rolled-back")

    # Hold, with a reason; the server records it; unhold.
    page.get_by_label("Reason for holding").fill("freeze for the audit")
    page.get_by_role("button", name="Hold").click()
    expect(page.locator("#hold-state")).to_contain_text("held by rita: freeze for the audit")
    held = production(web)
    assert (held["held"], held["held_by"], held["hold_reason"]) == (
        True,
        "rita",
        "freeze for the audit",
    )
    shot(page, "environment-held")
    page.get_by_role("button", name="Unhold").click()
    expect(page.locator("#hold-state")).to_contain_text("new releases are deployed")
    assert production(web)["held"] is False

    # A hold from elsewhere (the CLI) shows up live.
    web.cli("hold", "production", "--service", "shop", "--reason", "from the terminal")
    expect(page.locator("#hold-state")).to_contain_text("from the terminal", timeout=LONG)


def test_a_read_only_viewer_sees_no_buttons_on_the_environment_page(web: Web, page: Page) -> None:
    two_releases(web)
    signed_in(page, web, web.token("viewer", "read", user="vera"), next=PAGE)
    expect(page.locator("#current-release")).to_have_text(re.compile(r"^r2-"))
    expect(page.locator("#history tbody tr")).to_have_count(2)
    expect(page.get_by_role("main").get_by_role("button")).to_have_count(0)
    expect(page.get_by_label("Roll back to")).to_have_count(0)
    shot(page, "environment-read-only")


def test_an_unknown_environment_says_which_ones_exist(web: Web, page: Page) -> None:
    web.service("shop", files("v1"))
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    signed_in(page, web, web.admin_token, next="/services/shop/environments/qa")
    expect(page.get_by_role("alert")).to_contain_text("service shop has no environment qa")
    expect(page.get_by_role("alert")).to_contain_text("production")


def test_health_shows_the_monitor_and_an_open_incident_outweighs_a_passing_look(
    web: Web, page: Page
) -> None:
    web.service("shop", files("v1"))
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    until(lambda: serving(web, 1), 30, "production to serve release 1")
    # The monitor's first look (every 10 s by default) has been recorded.
    until(lambda: production(web)["checked_at"], 30, "the monitor to look at production")
    signed_in(page, web, web.token("viewer", "read", user="vera"), next=PAGE)

    head = page.locator("#health-state")
    expect(head).to_contain_text("healthy")
    expect(page.locator("#monitor-state")).to_have_text(
        "Watched every 10 s; acts after 3 failed looks in a row."
    )
    expect(page.locator("#monitor-look")).to_contain_text("checks passing")
    expect(page.locator("#monitor-look")).to_contain_text("GET /healthz → 200")
    expect(page.locator("#open-incidents")).to_have_text("No incident is open here.")

    # An incident opened elsewhere shows up live, and the page stops calling it healthy even
    # though the monitor's checks still pass.
    r = web.api.post(
        "/incidents",
        json={"service": "shop", "environment": "production", "title": "checkout returns 500"},
    )
    assert r.status_code == 201, r.text
    incident = r.json()
    item = page.get_by_role("list", name="Open incidents").get_by_role("listitem")
    expect(item).to_have_count(1)
    expect(item).to_contain_text(f"#{incident['id']} checkout returns 500")
    expect(item.get_by_role("link")).to_have_attribute("href", f"/incidents/{incident['id']}")
    expect(head).to_contain_text("incident open")
    expect(page.get_by_role("main")).not_to_contain_text(re.compile(r"\bhealthy\b"))
    expect(page.locator("#monitor-look")).to_contain_text("checks passing")
    shot(page, "environment-incident-open")
    # The overview's tile says the same.
    page.goto(f"{web.url}/")
    tile = page.locator(".ov-env", has_text="production")
    expect(tile).to_contain_text("incident open")
    expect(tile).not_to_contain_text(re.compile(r"\bhealthy\b"))
    page.goto(f"{web.url}{PAGE}")

    # Resolved: healthy again.
    r = web.api.post(f"/incidents/{incident['id']}/resolve", json={})
    assert r.status_code == 200, r.text
    expect(page.locator("#open-incidents")).to_have_text("No incident is open here.")
    expect(head).to_contain_text("healthy")
