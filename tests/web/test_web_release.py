"""The release page in a real Chromium against a real `conveyor server`: a release that fails
its health check in production is rolled back automatically, and its timeline shows it live:
the failed check with its result, the rollback and why, the incident and its recovery."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.serverproc import until
from tests.web.conftest import APP, HEALTH, Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PRODUCTION = f"""\
service: shop
jobs:
  build:
    run: mkdir -p dist && echo shop > dist/shop.txt
    artifacts: [dist/shop.txt]
  test:
    needs: [build]
    run: "true"
environments:
  production:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""
LONG = 30_000


def files(version: str, healthy: bool) -> dict[str, str]:
    return {
        "app.py": APP,
        "VERSION": version,
        "HEALTHY": "yes" if healthy else "no",
        "conveyor.yml": PRODUCTION,
    }


def serving(web: Web, release: int) -> bool:
    [env] = web.api.get("/environments", params={"service": "shop"}).json()
    return bool(env["release"] == release and env["healthy"] and not env["queue"])


def test_an_automatic_rollback_appears_on_the_release_page_with_its_check_and_incident(
    web: Web, page: Page
) -> None:
    repo = web.service("shop", files("v1", True), message="v1: the first shop")
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    until(lambda: serving(web, 1), 30, "production to serve release 1")
    reader = web.token("viewer", "read", user="vera")
    signed_in(page, web, reader, next="/releases/1")

    timeline = page.get_by_role("list", name=re.compile("What happened to release r1-"))
    commit = timeline.locator("[data-kind=commit]")
    expect(commit).to_contain_text("v1: the first shop")
    expect(commit).to_contain_text("Ada Author")
    expect(commit).to_contain_text("No forge is known")
    build = timeline.locator("[data-kind=run]")
    expect(build.get_by_role("link", name="Run #1")).to_have_attribute("href", "/runs/1")
    expect(build).to_contain_text("build")
    expect(build).to_contain_text("test")
    artifacts = timeline.locator("[data-kind=release]")
    expect(artifacts.get_by_role("link", name="dist/shop.txt")).to_be_visible()
    expect(artifacts.locator("code.digest")).to_have_text(re.compile(r"^sha256:[0-9a-f]{64}$"))
    deployed = timeline.locator("[data-kind=deployment]")
    expect(deployed).to_contain_text("Deployed to production")
    expect(deployed).to_contain_text("succeeded")
    expect(deployed.locator("[data-outcome=pass]").first).to_contain_text("pass")
    expect(page.get_by_text("Serving in production")).to_be_visible()
    # A read-only viewer: nothing to press here.
    expect(page.get_by_role("main").get_by_role("button")).to_have_count(0)
    shot(page, "release-healthy")

    # Release 2 cannot pass its health check: watch its page while it fails and is undone.
    repo.commit("v2: break the health check", files("v2", False))
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    page.goto(f"{web.url}/releases/2")
    timeline = page.get_by_role("list", name=re.compile("What happened to release r2-"))
    expect(timeline.locator("[data-kind=commit]")).to_contain_text("v2: break the health check")
    rollback = timeline.locator("[data-kind=rollback]")
    expect(rollback).to_contain_text("Automatic rollback of production to", timeout=LONG)
    expect(rollback.get_by_role("link", name=re.compile(r"^r1-"))).to_have_attribute(
        "href", "/releases/1"
    )
    expect(rollback).to_contain_text("succeeded", timeout=LONG)
    expect(rollback.locator(".why")).to_contain_text("503")

    failed = timeline.locator("[data-kind=deployment]")
    expect(failed).to_contain_text("rolled back")
    check = failed.locator("[data-outcome=fail]").first
    expect(check).to_contain_text("fail")
    expect(check).to_contain_text("503")
    check.get_by_text("Observed values").click()
    expect(check.locator("dl.observed")).to_be_visible()

    incident = timeline.locator("[data-kind=incident]")
    expect(incident.get_by_role("link", name="Incident #1")).to_be_visible()
    expect(incident).to_contain_text("resolved", timeout=LONG)
    expect(incident.locator(".recovery")).to_have_text(re.compile(r"\d+(\.\d+)? s|min"))
    expect(page.get_by_text("Not serving in any environment now")).to_be_visible()
    shot(page, "release-rolled-back")
    # Readable from 1024 px: nothing wider than the window.
    page.set_viewport_size({"width": 1024, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "release-1024")

    # The same story through the API the page reads.
    entries = web.api.get("/releases/2/timeline").json()["entries"]
    kinds = [e["kind"] for e in entries]
    assert kinds[:3] == ["commit", "run", "release"]
    assert {"deployment", "rollback", "incident"} <= set(kinds)

    page.get_by_role("link", name="Run #2").click()
    expect(page).to_have_url(re.compile(r"/runs/2$"))


def test_an_unknown_release_says_so(web: Web, page: Page) -> None:
    signed_in(page, web, web.admin_token, next="/releases/42")
    expect(page.get_by_role("alert")).to_contain_text("there is no release 42")
    page.goto(f"{web.url}/releases/nope")
    expect(page.get_by_role("alert")).to_contain_text("not a release number")
