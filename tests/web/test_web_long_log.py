"""A 100,000-line log on the run page: it loads whole, the page holds rows only for the lines
near the view (the DOM stays small), and every line can still be reached by its link, by
scrolling to it and by search. A real server and runner; the step is awk printing the lines."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Web, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LINES = 100_000
LONG = f"""\
service: shop
jobs:
  build:
    run: awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "compiling unit %06d ok\\n", i }}'
"""
# Rows the page may hold at once: the blocks near the view, not the log.
FEW = 2_000


def rows(page: Page) -> int:
    return page.locator(".log-line").count()


def test_a_100000_line_log_keeps_the_page_small_and_every_line_reachable(
    web: Web, page: Page
) -> None:
    web.service("shop", {"conveyor.yml": LONG})
    run = web.trigger("shop")["id"]
    assert web.wait_run(run, 60)["status"] == "succeeded"
    signed_in(page, web, web.admin_token, next=f"/runs/{run}")
    expect(page.locator(".log-stream-state")).to_contain_text(
        f"Log complete · {LINES} lines", timeout=30_000
    )
    step = page.locator("details.step").first
    expect(step.locator(".step-lines")).to_have_text(f"{LINES} lines")
    expect(page.locator(".log-line").first).to_contain_text("compiling unit 000001 ok")
    assert 0 < rows(page) <= FEW
    # The whole log as text, with the signed-in page's own session.
    href = page.get_by_role("link", name="Download log").get_attribute("href")
    assert href is not None
    raw = page.request.get(f"{web.url}{href}")
    assert raw.ok
    text = raw.text().splitlines()
    assert text[0] == "==> build, attempt 1 <=="
    assert len(text) == LINES + 1
    assert text[-1] == f"compiling unit {LINES:06d} ok"

    # Scrolled to the end, the last lines are there, and the first are gone from the page.
    page.locator(".steps").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    expect(page.locator(".log-line", has_text=f"compiling unit {LINES:06d} ok")).to_be_visible()
    expect(page.locator(".log-line", has_text="compiling unit 000001 ok")).to_have_count(0)
    assert rows(page) <= FEW

    # A link to a line in the middle shows it, marked.
    page.goto(f"{web.url}/runs/{run}#Lbuild-54321")
    target = page.locator("#Lbuild-54321")
    expect(target).to_be_visible(timeout=30_000)
    expect(target).to_contain_text("compiling unit 054321 ok")
    expect(target).to_have_class("log-line log-line-target")
    assert rows(page) <= FEW

    # Search finds one line among all of them and brings it into view.
    expect(page.locator(".log-stream-state")).to_contain_text("Log complete", timeout=30_000)
    page.get_by_label("Search log").fill("unit 077777")
    expect(page.locator("#log-search-count")).to_have_text("1 of 1 matching line")
    current = page.locator(".log-line-current")
    expect(current).to_be_visible()
    expect(current.locator("mark")).to_have_text("unit 077777")
    assert rows(page) <= FEW
    page.get_by_label("Search log").fill("")
    expect(page.locator("#log-search-count")).to_have_text("")
    expect(page.locator(".log-line").first).to_be_visible()
    assert rows(page) <= FEW
