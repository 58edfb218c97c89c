"""The releases page in a real browser against a real server: releases of real runs (one of
them deployed to staging by the process target), filtered by service and by the environment a
release served in with the filters in the URL (a reload shows the same list), paged, and on a
360 px phone without sticking out sideways."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.server.test_server_run_list import STAGED
from tests.serverproc import until
from tests.web.conftest import APP, Web, shot, signed_in
from tests.web.test_web_runs_list import pipeline, queue

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def three_releases(web: Web) -> dict[str, int]:
    """shop's release (deployed to staging), then two of blog (no environments): their ids."""
    web.service(
        "shop",
        {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": STAGED},
        message="Ship the shop",
    )
    blog = web.service("blog", pipeline("blog", "true"), message="Start the blog")
    runs = [queue(web, "shop"), queue(web, "blog")]
    runs.append(queue(web, "blog", blog.commit("Add an about page")))
    for run_id in runs:
        assert web.wait_run(run_id)["status"] == "succeeded"
    released = {r["run"]: r["id"] for r in web.api.get("/releases").json()}
    ids = dict(zip(("shop", "blog_start", "blog_about"), (released[r] for r in runs), strict=True))

    def staged() -> bool:
        found = web.api.get("/releases", params={"environment": "staging"}).json()
        return [r["id"] for r in found] == [ids["shop"]]

    until(staged, 45, "the shop's release to serve in staging")
    return ids


def expect_rows(page: Page, ids: list[int]) -> None:
    rows = page.locator(".releases-table tbody tr")
    expect(rows).to_have_count(len(ids))
    for position, release_id in enumerate(ids):
        link = rows.nth(position).get_by_role("link", name=f"#{release_id}", exact=True)
        expect(link).to_have_attribute("href", f"/releases/{release_id}")


def test_releases_are_listed_filtered_in_the_url_paged_and_fit_a_phone(
    web: Web, page: Page
) -> None:
    ids = three_releases(web)
    newest_first = [ids["blog_about"], ids["blog_start"], ids["shop"]]
    signed_in(page, web, web.admin_token, next="/releases")
    expect(page.get_by_role("heading", name="Releases", exact=True)).to_be_visible()
    expect_rows(page, newest_first)
    row = page.locator(f'.releases-table tr[data-id="{ids["shop"]}"]')
    for text in ("shop", "main", "Ship the shop", "Ada Author"):
        expect(row).to_contain_text(text)
    expect(row.locator('td[data-label="Built"] time')).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+")
    )

    page.get_by_label("Served in").select_option("staging")
    expect(page).to_have_url(re.compile(r"/releases\?environment=staging$"))
    expect_rows(page, [ids["shop"]])
    page.get_by_label("Served in").select_option("")
    page.get_by_label("Service").select_option("blog")
    expect(page).to_have_url(re.compile(r"/releases\?service=blog$"))
    expect_rows(page, [ids["blog_about"], ids["blog_start"]])
    page.reload()
    expect_rows(page, [ids["blog_about"], ids["blog_start"]])
    expect(page.get_by_label("Service")).to_have_value("blog")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/releases$"))
    expect_rows(page, newest_first)

    page.goto(f"{web.url}/releases?per_page=2")
    expect_rows(page, newest_first[:2])
    page.get_by_role("link", name="Older releases").click()
    expect_rows(page, newest_first[2:])
    expect(page.get_by_role("link", name="Older releases")).to_have_count(0)

    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{web.url}/releases?environment=staging")
    expect_rows(page, [ids["shop"]])
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = page.locator(".releases-table tbody tr").first.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 360
    shot(page, "360px")
