"""The overview in a real browser against a real server: services × environments with the
release each runs, live updates when a deployment happens, sign-in, read-only viewers, keyboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.serverproc import until
from tests.web.conftest import APP, HEALTH, Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def pipeline() -> str:
    return f"""\
service: shop
jobs:
  test:
    run: "true"
environments:
  staging:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
  production:
    after: staging
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""


def files(version: str) -> dict[str, str]:
    return {"app.py": APP, "VERSION": version, "HEALTHY": "yes", "conveyor.yml": pipeline()}


def serving(web: Web, environment: str, release: int) -> dict[str, Any] | None:
    envs = web.api.get("/environments", params={"service": "shop"}).json()
    env: dict[str, Any] = next(e for e in envs if e["environment"] == environment)
    return env if env["release"] == release and env["healthy"] else None


def shop_released(web: Web) -> Any:
    repo = web.service("shop", files("v1"), message="Ship the first version")
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    until(lambda: serving(web, "production", 1), 45, "production to serve release 1")
    return repo


def tile(page: Page, environment: str) -> Any:
    return page.locator(f'article.ov-env[data-service="shop"][data-env="{environment}"]')


def test_overview_shows_each_environment_s_release_and_follows_a_deployment_live(
    web: Web, page: Page
) -> None:
    repo = shop_released(web)
    signed_in(page, web, web.token("viewer", "read", user="vera"))

    production = tile(page, "production")
    expect(production.get_by_role("link", name="production")).to_have_attribute(
        "href", "/services/shop/environments/production"
    )
    expect(production).to_contain_text("Release 1")
    expect(production).to_contain_text("Ship the first version")
    expect(production).to_contain_text("healthy")
    expect(production.locator(".tier")).to_have_text("production")
    expect(tile(page, "staging")).to_contain_text("Release 1")
    # Pipeline order: staging before production.
    envs = page.locator("article.ov-env").evaluate_all("els => els.map(e => e.dataset.env)")
    assert envs == ["staging", "production"]
    runs = page.locator("table.ov-runs tbody tr")
    expect(runs).to_have_count(1)
    expect(runs.first).to_contain_text("succeeded")
    expect(runs.first.get_by_role("link", name="#1")).to_have_attribute("href", "/runs/1")
    shot(page, "release-1")

    loaded = page.locator("#ov-body").get_attribute("data-loaded")
    page.evaluate("window.stillTheSamePage = true")
    repo.commit("Ship the second version", files("v2"))
    web.trigger("shop")
    # No reload: the page hears of the run and of the deployments and shows them.
    expect(runs).to_have_count(2, timeout=30_000)
    expect(production).to_contain_text("Release 2", timeout=60_000)
    expect(production).to_contain_text("Ship the second version")
    expect(tile(page, "staging")).to_contain_text("Release 2")
    assert page.locator("#ov-body").get_attribute("data-loaded") != loaded
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    assert serving(web, "production", 2)
    shot(page, "release-2")

    # Readable from 1024 px: nothing sticks out sideways.
    page.set_viewport_size({"width": 1024, "height": 768})
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    shot(page, "1024px")


def test_a_read_only_viewer_sees_no_action_buttons_and_a_trigger_token_does(
    web: Web, page: Page, browser: Any
) -> None:
    shop_released(web)
    signed_in(page, web, web.token("viewer", "read"))
    expect(tile(page, "production")).to_contain_text("Release 1")
    expect(page.locator("main").get_by_role("button")).to_have_count(0)
    # The header shows who is signed in and with what.
    expect(page.locator("#who-name")).to_contain_text("read")
    shot(page, "read-only")

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        other = context.new_page()
        signed_in(other, web, web.token("builder", "trigger"))
        run = other.locator("main").get_by_role("button", name="Run shop")
        expect(run).to_be_visible()
        run.click()
        expect(other.locator("table.ov-runs tbody tr")).to_have_count(2)
        expect(other.get_by_text(re.compile(r"Run #2 of shop queued"))).to_be_visible()
    finally:
        context.close()


def test_an_unauthenticated_visit_goes_to_sign_in_and_then_back(web: Web, page: Page) -> None:
    page.goto(f"{web.url}/services/shop/environments/production?x=1")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fservices%2Fshop%2Fenvironments"))
    expect(page.get_by_role("heading", name="Sign in to Conveyor")).to_be_visible()
    # Nothing but sign-in: no user, no sign-out button.
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

    page.get_by_label("API token").fill("cvy_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked token")
    shot(page, "refused")

    page.get_by_label("API token").fill(web.token("viewer", "read"))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{web.url}/services/shop/environments/production?x=1")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin"))
    page.goto(f"{web.url}/dora")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fdora"))


def test_sign_in_with_a_user_name_and_password(web: Web, page: Page) -> None:
    web.user("olga", "correct horse battery", "read,approve")
    page.goto(f"{web.url}/signin")
    page.get_by_role("tab", name="User and password").click()
    page.get_by_label("User name").fill("olga")
    page.get_by_label("Password", exact=True).fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong user name or password")

    signed_in(page, web, user="olga", password="correct horse battery")
    expect(page).to_have_url(f"{web.url}/")
    expect(page.locator("#who-name")).to_have_text("olga (approve, read)")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_the_keyboard_reaches_the_navigation_and_follows_its_links(web: Web, page: Page) -> None:
    signed_in(page, web, web.token("viewer", "read"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert reached[0] == "Skip to content"
    for name in ("Overview", "Runs", "Releases", "Approvals", "DORA", "Incidents", "Sign out"):
        assert any(r.startswith(name) for r in reached), (name, reached)
    # A focus ring shows where the keyboard is.
    page.locator('nav a[href="/dora"]').focus()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{web.url}/dora")
    expect(page.locator('nav a[href="/dora"]')).to_have_attribute("aria-current", "page")
    shot(page, "keyboard")


def test_a_pending_approval_shows_on_the_tile_and_in_the_header_until_decided(
    web: Web, page: Page
) -> None:
    gated = pipeline().replace(
        "    after: staging\n", "    after: staging\n    approval: { approvers: [ops] }\n"
    )
    web.cli("user", "add", "olga", "--group", "ops")
    web.service("shop", {**files("v1"), "conveyor.yml": gated})
    signed_in(page, web, web.token("viewer", "read"))
    web.trigger("shop")

    production = tile(page, "production")
    expect(production).to_contain_text("1 approval pending", timeout=45_000)
    expect(production.get_by_role("link", name="1 approval pending")).to_have_attribute(
        "href", "/approvals"
    )
    expect(production).to_contain_text("nothing deployed")
    expect(tile(page, "staging")).to_contain_text("Release 1")
    count = page.locator("#nav-approvals-count")
    expect(count).to_have_text("1")
    expect(page.locator("#ov-summary")).to_contain_text("1 pending approval")
    shot(page, "approval-pending")

    [approval] = web.api.get("/approvals").json()
    olga = web.token("olga", "approve", user="olga")
    r = web.api.post(
        f"/approvals/{approval['id']}/approve",
        json={"reason": "looks good"},
        headers={"Authorization": f"Bearer {olga}"},
    )
    assert r.status_code == 200, r.text
    expect(production).to_contain_text("Release 1", timeout=45_000)
    expect(production).not_to_contain_text("approval pending")
    expect(count).to_be_hidden()
