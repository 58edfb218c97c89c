"""Every page of the web UI in a real Chromium against a real `conveyor server`, at a 360 px phone
and a 1280 px desktop: nothing sticks out sideways and the page's heading shows; the dark palette
follows the system's colour scheme; an unknown address answers 404 with a page that leads back."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.serverproc import until
from tests.web.conftest import APP, HEALTH, TIMEOUT_MS, Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CONFIG = f"""\
service: shop
jobs:
  test:
    run: "echo testing the shop"
environments:
  production:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""
PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
UNKNOWN = "/no/such/page"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One server for the module: a service with a run, a release in production and an open
    incident, so each page has something to lay out."""
    web = Web(Path(tmp_path_factory.mktemp("screens")))
    try:
        web.service(
            "shop", {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": CONFIG}
        )
        run = web.trigger("shop")
        assert web.wait_run(run["id"])["status"] == "succeeded", web.logs()

        def serving() -> bool:
            [env] = web.api.get("/environments", params={"service": "shop"}).json()
            return bool(env["release"] == 1 and env["healthy"] and not env["queue"])

        until(serving, 30, "production to serve release 1")
        r = web.api.post(
            "/incidents",
            json={
                "service": "shop",
                "title": "checkout answers slowly",
                "environment": "production",
            },
        )
        assert r.status_code == 201, r.text
        yield web
    finally:
        web.close()


# Each page, and a text that shows once its data has been drawn.
PAGES = [
    ("/", "shop"),
    ("/runs/1", "test"),
    ("/releases/1", "production"),
    ("/services/shop/environments/production", "production"),
    ("/approvals", "Approvals"),
    ("/inbox", "Inbox"),
    ("/incidents", "checkout answers slowly"),
    ("/dora", "Deployment frequency"),
    ("/teams", "Teams"),
    ("/runs", "first"),
    ("/releases", "run #1"),
    ("/deployments", "production"),
    ("/deployments/1", "Deployment log"),
    ("/incidents/1", "checkout answers slowly"),
    ("/releases/1/compare/1", "brings no commit"),
    (UNKNOWN, "Page not found"),
]


def overflow(page: Page) -> int:
    """How far the page reaches past the window's right edge, in CSS pixels."""
    width: int = page.evaluate(
        "document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
    )
    return width


def sticking_out(page: Page) -> list[str]:
    """The outermost elements whose right edge is past the window's (for the failure message)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
          .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
          .filter((el) => !el.parentElement.closest('*') ||
            el.parentElement.getBoundingClientRect().right <= innerWidth + 0.5)
          .slice(0, 5)
          .map((el) => el.tagName + '.' + el.className + ' ' + el.getBoundingClientRect().right)"""
    )
    return found


def fits(page: Page, name: str, width: int) -> None:
    expect(page.locator("main h1").first).to_be_visible()
    assert overflow(page) <= 0, f"{name} overflows by {overflow(page)} px: {sticking_out(page)}"
    # The navigation stays reachable on every size: each link shows inside the window.
    for link in page.locator(".site-nav a").all():
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None, name
        assert box["x"] >= 0, name
        assert box["x"] + box["width"] <= width, name


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone-360", "desktop-1280"])
def test_every_page_fits_the_window(site: Web, page: Page, size: ViewportSize) -> None:
    page.set_viewport_size(size)
    page.goto(f"{site.url}/signin")
    fits(page, "sign-in", size["width"])
    signed_in(page, site, site.admin_token)
    for path, shows in PAGES:
        page.goto(f"{site.url}{path}")
        expect(page.locator("main")).to_contain_text(shows)
        expect(page.locator("main .loading")).to_have_count(0)
        fits(page, path, size["width"])
        if path == "/incidents":
            # The action of a row shows without scrolling sideways, on a phone too.
            resolve = page.get_by_role("button", name=re.compile(r"^Resolve incident"))
            expect(resolve).to_be_in_viewport()
            box = resolve.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= size["width"]
        shot(page, f"{size['width']}-{path.strip('/').replace('/', '-') or 'overview'}")
    # The current page is marked in the navigation, whatever the size.
    page.goto(f"{site.url}/runs")
    expect(page.get_by_role("link", name="Runs", exact=True)).to_have_attribute(
        "aria-current", "page"
    )


def luminance(css: str) -> float:
    """WCAG relative luminance of an `rgb(...)`/`rgba(...)` computed colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@contextlib.contextmanager
def signed_in_as_admin(site: Web, browser: Browser, next: str, **options: Any) -> Iterator[Page]:
    """A page in a context of its own (a colour scheme, a time zone), signed in at `next`."""
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield signed_in(context.new_page(), site, site.admin_token, next=next)
    finally:
        context.close()


def test_a_dark_system_scheme_gives_a_dark_page(site: Web, browser: Browser) -> None:
    with signed_in_as_admin(
        site, browser, "/incidents", viewport=DESKTOP, color_scheme="dark"
    ) as page:
        expect(page.locator("main")).to_contain_text("checkout answers slowly")
        colours = page.evaluate(
            """() => {
              const style = (sel, prop) => getComputedStyle(document.querySelector(sel))[prop];
              return {
                bg: style('body', 'backgroundColor'),
                text: style('body', 'color'),
                heading: style('main h1', 'color'),
                muted: style('.subtle, .hint, .empty, th', 'color'),
                table: style('table', 'backgroundColor'),
              };
            }"""
        )
        shot(page, "dark-incidents")
        assert luminance(colours["bg"]) < 0.05, colours
        assert luminance(colours["text"]) > 0.6, colours
        assert contrast(colours["text"], colours["bg"]) >= 7, colours
        assert contrast(colours["heading"], colours["bg"]) >= 7, colours
        assert contrast(colours["muted"], colours["table"]) >= 4.5, colours


def test_an_unknown_address_is_a_404_page_that_leads_back(site: Web, page: Page) -> None:
    answer = httpx.get(f"{site.url}{UNKNOWN}")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    # The API keeps answering in JSON.
    api = httpx.get(f"{site.url}/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"
    posted = httpx.post(f"{site.url}{UNKNOWN}")
    assert posted.status_code == 404
    assert posted.json()["error"]["code"] == "not_found"
    # A page's address with a trailing slash still leads to the page; never to another site.
    slash = httpx.get(f"{site.url}/runs/?status=failed")
    assert slash.status_code == 307
    assert slash.headers["location"] == "/runs?status=failed"
    elsewhere = httpx.get(f"{site.url}//elsewhere.example/")
    assert elsewhere.status_code == 404, elsewhere.headers.get("location")
    # A scraper's "/metrics/" is redirected to /metrics, not given the page.
    scraper = httpx.get(f"{site.url}/metrics/")
    assert (scraper.status_code, scraper.headers["location"]) == (307, f"{site.url}/metrics")

    signed_in(page, site, site.admin_token)
    response = page.goto(f"{site.url}{UNKNOWN}")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page).to_have_title(re.compile("Not found"))
    main = page.locator("main")
    expect(main).to_contain_text(UNKNOWN)
    for name, href in (("overview", "/"), ("runs", "/runs"), ("releases", "/releases")):
        expect(main.get_by_role("link", name=re.compile(name, re.I))).to_have_attribute(
            "href", href
        )
    main.get_by_role("link", name=re.compile("runs", re.I)).click()
    expect(page).to_have_url(f"{site.url}/runs")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()


def test_times_show_the_absolute_time_with_its_zone(site: Web, browser: Browser) -> None:
    """Beside "5 min ago" the page shows when, in the browser's zone, and names the zone."""
    with signed_in_as_admin(
        site, browser, "/runs/1", viewport=PHONE, timezone_id="America/New_York"
    ) as page:
        queued = dt.datetime.fromisoformat(site.api.get("/runs/1").json()["created_at"])
        local = queued.astimezone(zoneinfo.ZoneInfo("America/New_York"))
        shown = page.locator(".fact", has_text="Queued").locator("time")
        expect(shown).to_be_visible()
        expect(shown).to_contain_text(re.compile(r"^(just now|\d+ \w+ ago) "))
        expect(shown).to_contain_text(f"({local.strftime('%Y-%m-%d %H:%M')} EST)")
        expect(shown).to_have_attribute("title", f"{local.strftime('%Y-%m-%d %H:%M:%S')} EST")
        expect(shown.locator(".time-abs")).to_be_visible()
        shot(page, "zoned-run")
