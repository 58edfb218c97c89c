"""The runs page in a real browser against a real server and real runs of real commits: every
run newest first, filtered by status and service with the filters carried in the URL (a reload
and back/forward show the same lists), a search, keyset paging, and a 360 px phone layout that
does not stick out sideways."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def pipeline(service: str, command: str) -> dict[str, str]:
    return {"conveyor.yml": f'service: {service}\njobs:\n  test:\n    run: "{command}"\n'}


def queue(web: Web, service: str, rev: str = "HEAD") -> int:
    """A run of `rev` as a push to main queues it (with its branch)."""
    r = web.api.post("/runs", json={"service": service, "rev": rev, "ref": "refs/heads/main"})
    assert r.status_code == 201, r.text
    run_id: int = r.json()["id"]
    return run_id


def five_runs(web: Web) -> dict[str, int]:
    """shop: basket (ok), checkout broken (fails), checkout mended (ok); blog: first (fails),
    fixed (ok). Their run ids by name, in the order they were queued."""
    shop = web.service("shop", pipeline("shop", "true"), message="Add the basket")
    queued = {"basket": queue(web, "shop")}
    queued["broken"] = queue(
        web, "shop", shop.commit("Break the checkout", pipeline("shop", "false"))
    )
    queued["mended"] = queue(
        web, "shop", shop.commit("Mend the checkout", pipeline("shop", "true"))
    )
    blog = web.service("blog", pipeline("blog", "false"), message="Start the blog")
    queued["blog_first"] = queue(web, "blog")
    queued["blog_fixed"] = queue(web, "blog", blog.commit("Fix the blog", pipeline("blog", "true")))
    for run_id in queued.values():
        web.wait_run(run_id)
    return queued


def shown_ids(page: Page) -> list[int]:
    return [
        int(i)
        for i in page.locator(".runs-table tbody tr").evaluate_all(
            "rows => rows.map((r) => r.dataset.id)"
        )
    ]


def expect_rows(page: Page, ids: list[int]) -> None:
    rows = page.locator(".runs-table tbody tr")
    expect(rows).to_have_count(len(ids))
    for position, run_id in enumerate(ids):
        expect(rows.nth(position).get_by_role("link", name=f"#{run_id}")).to_be_visible()


def test_runs_are_listed_filtered_in_the_url_and_paged(web: Web, page: Page) -> None:
    runs = five_runs(web)
    newest_first = sorted(runs.values(), reverse=True)
    signed_in(page, web, web.admin_token, next="/runs")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs")
    ).to_have_attribute("aria-current", "page")
    expect_rows(page, newest_first)

    # A row says what the run is: service, branch, commit, author, status, start with its zone.
    fixed = web.api.get(f"/runs/{runs['blog_fixed']}").json()
    row = page.locator(f'.runs-table tr[data-id="{runs["blog_fixed"]}"]')
    for text in ("blog", "main", fixed["sha"][:7], "Fix the blog", "Ada Author", "succeeded"):
        expect(row).to_contain_text(text)
    expect(row.get_by_role("link", name=f"#{runs['blog_fixed']}")).to_have_attribute(
        "href", f"/runs/{runs['blog_fixed']}"
    )
    zone = zoneinfo.ZoneInfo(page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone"))
    started = dt.datetime.fromisoformat(fixed["started_at"]).astimezone(zone)
    expect(row.locator('td[data-label="Started"] time')).to_have_text(
        re.compile("^" + re.escape(started.strftime("%Y-%m-%d %H:%M:%S")) + r" \S+")
    )
    expect(row.locator('td[data-label="Duration"]')).to_have_text(re.compile(r"\d+(\.\d)? s"))

    # Filter by status, then service: each filter goes into the URL.
    page.get_by_label("Status").select_option("failed")
    expect(page).to_have_url(re.compile(r"/runs\?status=failed$"))
    expect_rows(page, [runs["blog_first"], runs["broken"]])
    page.get_by_label("Service").select_option("shop")
    expect(page).to_have_url(re.compile(r"/runs\?service=shop&status=failed$"))
    expect_rows(page, [runs["broken"]])
    expect(page.locator(".runs-table")).to_contain_text("Break the checkout")

    # A reload (or the link, shared) shows the same list and the same filters.
    page.reload()
    expect_rows(page, [runs["broken"]])
    expect(page.get_by_label("Service")).to_have_value("shop")
    expect(page.get_by_label("Status")).to_have_value("failed")

    # Back steps through the filters as they were chosen; forward comes back.
    page.go_back()
    expect(page).to_have_url(re.compile(r"/runs\?status=failed$"))
    expect_rows(page, [runs["blog_first"], runs["broken"]])
    expect(page.get_by_label("Service")).to_have_value("")
    page.go_forward()
    expect_rows(page, [runs["broken"]])

    # A search of the commit's subject, or of a sha prefix.
    page.get_by_role("button", name="Clear filters").click()
    expect_rows(page, newest_first)
    # Since a day: today's runs are all of them, tomorrow has none yet.
    today = dt.datetime.now(zone).date()
    page.get_by_label("Since").fill(today.isoformat())
    expect(page).to_have_url(re.compile(rf"/runs\?since={today.isoformat()}$"))
    expect_rows(page, newest_first)
    page.get_by_label("Since").fill((today + dt.timedelta(days=1)).isoformat())
    expect(page.locator(".runs-list")).to_contain_text("No runs match these filters.")
    page.get_by_role("button", name="Clear filters").click()
    expect_rows(page, newest_first)
    search = page.get_by_label("Search")
    search.fill("checkout")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"/runs\?q=checkout$"))
    expect_rows(page, [runs["mended"], runs["broken"]])
    search.fill(fixed["sha"][:8])
    search.press("Enter")
    expect_rows(page, [runs["blog_fixed"]])
    search.fill("no such commit")
    search.press("Enter")
    expect(page.locator(".runs-list")).to_contain_text("No runs match these filters.")
    shot(page, "desktop")

    # Pages of two: older pages follow the last run shown, until there are none.
    page.goto(f"{web.url}/runs?per_page=2")
    expect_rows(page, newest_first[:2])
    page.get_by_role("link", name="Older runs").click()
    expect(page).to_have_url(re.compile(rf"before={newest_first[1]}"))
    expect_rows(page, newest_first[2:4])
    page.get_by_role("link", name="Older runs").click()
    expect_rows(page, newest_first[4:])
    expect(page.get_by_role("link", name="Older runs")).to_have_count(0)
    # And back, a page at a time, from the first run shown, to the newest.
    page.get_by_role("link", name="Newer runs").click()
    expect(page).to_have_url(re.compile(rf"after={newest_first[4]}"))
    expect_rows(page, newest_first[2:4])
    expect(page.locator(".list-status")).to_contain_text(f"newer than run #{newest_first[4]}")
    page.get_by_role("link", name="Newer runs").click()
    expect_rows(page, newest_first[:2])
    expect(page.get_by_role("link", name="Newer runs")).to_have_count(0)
    page.get_by_role("link", name="Older runs").click()
    expect_rows(page, newest_first[2:4])
    page.get_by_role("link", name="Newest runs").click()
    expect_rows(page, newest_first[:2])

    # The overview's latest runs of a service lead to all of them.
    page.goto(f"{web.url}/")
    page.get_by_role("link", name="All runs of shop").click()
    expect(page).to_have_url(re.compile(r"/runs\?service=shop$"))
    expect_rows(page, [runs["mended"], runs["broken"], runs["basket"]])


def test_runs_page_fits_a_360px_phone(web: Web, page: Page) -> None:
    runs = five_runs(web)
    page.set_viewport_size({"width": 360, "height": 740})
    signed_in(page, web, web.admin_token, next="/runs?status=succeeded")
    succeeded = [runs["blog_fixed"], runs["mended"], runs["basket"]]
    expect_rows(page, succeeded)
    # Nothing sticks out sideways: not the filters, the rows, nor the header above them.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for locator in (page.locator(".list-filters"), page.locator(".runs-table tbody tr").first):
        box = locator.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 360
    # Each row is a card that still names its fields.
    first = page.locator(".runs-table tbody tr").first
    expect(first.get_by_role("link", name=f"#{runs['blog_fixed']}")).to_be_in_viewport()
    label = first.locator('td[data-label="Status"]').evaluate(
        "td => getComputedStyle(td, '::before').content"
    )
    assert label == '"Status"'
    expect(page.get_by_label("Status")).to_have_value("succeeded")
    shot(page, "360px")

    # An address with a bad page cursor says what is wrong with it.
    page.goto(f"{web.url}/runs?before=abc")
    expect(page.get_by_role("alert")).to_contain_text("before")
    expect(page.locator(".runs-table")).to_have_count(0)
