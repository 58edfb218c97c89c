"""The incidents page against a real server: imported history plus an incident opened through
the API; open and resolved ones with their recovery time and deployment; resolving one (after a
confirmation) moves it to the resolved tab, live; a read-only viewer gets no Resolve button."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from conveyor.metrics.dora_options import fmt_duration
from tests.web.conftest import Web, shot, signed_in
from tests.web.test_web_dora import import_history

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def incidents(web: Web, **params: str) -> list[dict[str, Any]]:
    r = web.api.get("/incidents", params={"status": "all", **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


def open_by_api(web: Web) -> dict[str, Any]:
    r = web.api.post(
        "/incidents",
        json={"service": "search", "title": "search answers slowly", "environment": "production"},
    )
    assert r.status_code == 201, r.text
    opened: dict[str, Any] = r.json()
    return opened


def test_open_and_resolved_incidents_and_resolving_one(web: Web, page: Page) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    import_history(web, now)
    by_api = open_by_api(web)
    everything = incidents(web)
    still_open = [i for i in everything if i["status"] == "open"]
    resolved = [i for i in everything if i["status"] == "resolved"]
    assert len(still_open) == 2
    assert len(resolved) == 3

    signed_in(page, web, web.admin_token, next="/incidents")
    expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
    open_tab = page.get_by_role("tab", name=re.compile(r"^Open"))
    expect(open_tab).to_have_attribute("aria-selected", "true")
    expect(open_tab).to_contain_text(f"({len(still_open)})")
    rows = page.locator(".incidents-table tbody tr")
    expect(rows).to_have_count(len(still_open))
    row = page.locator(f'tr[data-id="{by_api["id"]}"]')
    expect(row).to_contain_text("search answers slowly")
    expect(row).to_contain_text("person")
    expect(row).to_contain_text("still open")
    expect(row.get_by_role("link", name="production")).to_have_attribute(
        "href", "/services/search/environments/production"
    )
    imported_open = next(i for i in still_open if i["source"] == "import")
    expect(page.locator(f'tr[data-id="{imported_open["id"]}"]')).to_contain_text("import")
    shot(page, "open")

    # Resolved ones, each with its recovery time, written as `conveyor dora` writes durations.
    page.get_by_role("tab", name=re.compile(r"^Resolved")).click()
    expect(rows).to_have_count(len(resolved))
    for incident in resolved:
        recovery = page.locator(f'tr[data-id="{incident["id"]}"] .incident-recovery')
        expect(recovery).to_have_text(fmt_duration(incident["recovery_seconds"]))
    # PD-1 names its deployment: the list says so.
    explicit = next(i for i in resolved if i["deployment_key"])
    cell = page.locator(f'tr[data-id="{explicit["id"]}"] .incident-deployment')
    expect(cell).to_contain_text(explicit["deployment_key"])
    expect(cell).to_contain_text("explicitly")
    shot(page, "resolved")

    # Resolve the one opened through the API; cancelling first changes nothing.
    page.get_by_role("tab", name=re.compile(r"^Open")).click()
    resolve = row.get_by_role("button", name=re.compile("^Resolve incident"))
    resolve.click()
    confirm = page.locator("dialog#confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("search answers slowly")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(rows).to_have_count(len(still_open))
    assert web.api.get(f"/incidents/{by_api['id']}").json()["status"] == "open"

    resolve.click()
    confirm.get_by_role("button", name="Resolve").click()
    expect(rows).to_have_count(len(still_open) - 1)
    expect(open_tab).to_contain_text(f"({len(still_open) - 1})")
    done = web.api.get(f"/incidents/{by_api['id']}").json()
    assert done["status"] == "resolved"
    assert done["resolved_by"] == "by root"
    page.get_by_role("tab", name=re.compile(r"^Resolved")).click()
    moved = page.locator(f'tr[data-id="{by_api["id"]}"]')
    expect(moved).to_be_visible()
    expect(moved.locator(".incident-recovery")).to_have_text(fmt_duration(done["recovery_seconds"]))

    # Something happening elsewhere shows up without a reload: a new incident, live.
    page.get_by_role("tab", name=re.compile(r"^Open")).click()
    another = open_by_api(web)
    expect(page.locator(f'tr[data-id="{another["id"]}"]')).to_be_visible()
    expect(open_tab).to_contain_text(f"({len(still_open)})")


def test_a_read_only_viewer_sees_no_resolve_button(web: Web, page: Page) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    import_history(web, now)
    opened = open_by_api(web)
    viewer = web.token("viewer", "read")
    signed_in(page, web, viewer, next="/incidents")
    row = page.locator(f'tr[data-id="{opened["id"]}"]')
    expect(row).to_contain_text("search answers slowly")
    expect(page.get_by_role("button", name=re.compile("Resolve"))).to_have_count(0)
    shot(page, "read-only")

    # One service: the list, the counts and the URL follow the filter.
    page.get_by_role("tab", name=re.compile(r"^All")).click()
    page.get_by_label("Service").select_option("shop")
    expect(page).to_have_url(re.compile(r"service=shop"))
    shop = incidents(web, service="shop")
    expect(page.locator(".incidents-table tbody tr")).to_have_count(len(shop))
    expect(page.locator(".incidents-table tbody tr").filter(has_text="search")).to_have_count(0)

    # A link from the DORA page's explanation lands on the incident, highlighted, in its tab.
    resolved = next(i for i in incidents(web) if i["status"] == "resolved")
    page.goto(f"{web.url}/incidents?id={resolved['id']}")
    expect(page.get_by_role("tab", name=re.compile(r"^Resolved"))).to_have_attribute(
        "aria-selected", "true"
    )
    expect(page.locator(f'tr[data-id="{resolved["id"]}"]')).to_have_class(re.compile("is-focus"))
