"""The DORA dashboard against a real server holding weeks of imported history: every card shows
what GET /api/v1/dora says for the same view (all services, one service, other ranges), the
weekly chart has one mark per week, and a number opens the items behind it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Page, expect

from conveyor.cli.dora import SAMPLE, plural, show
from tests.web.conftest import Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]
HOUR = dt.timedelta(hours=1)

CARDS = (
    "deployment_frequency",
    "lead_time",
    "change_failure_rate",
    "recovery_time",
    "rework_rate",
    "batch_size",
    "work_in_progress",
)


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def history(now: dt.datetime) -> list[dict[str, Any]]:
    """Two services' production deployments over the last ~25 weeks (the default 90-day window
    and the one before it, for trends): failures, a rollback, incidents blamed explicitly, by
    window and on nothing, and one still open."""
    records: list[dict[str, Any]] = []
    n = 0

    def deploy(
        service: str, ident: str, finished: dt.datetime, status: str = "succeeded", **extra: Any
    ) -> None:
        nonlocal n
        n += 1
        sha = f"{n:040x}"
        commits = [
            {
                "sha": f"{n:032x}{k:08x}",
                "committed_at": rfc3339(finished - dt.timedelta(hours=5 * k)),
            }
            for k in range(1, 1 + n % 3)
        ]
        records.append(
            {
                "kind": "deployment",
                "service": service,
                "environment": "production",
                "id": ident,
                "commit": sha,
                "started_at": rfc3339(finished - dt.timedelta(minutes=12)),
                "finished_at": rfc3339(finished),
                "status": status,
                "commits": [
                    {"sha": sha, "committed_at": rfc3339(finished - dt.timedelta(hours=9))},
                    *commits,
                ],
                **extra,
            }
        )

    day = dt.timedelta(days=1)
    for i in range(22):
        at = now - dt.timedelta(days=2 + 3.5 * i, hours=i % 5)
        status = "failed" if i in (4, 11) else "rolled_back" if i == 7 else "succeeded"
        deploy("shop", f"shop-{i}", at, status)
        if i == 7:
            deploy("shop", "shop-r7", at + dt.timedelta(minutes=20), rollback_of="shop-7")
    for i in range(9):
        deploy(
            "search",
            f"search-{i}",
            now - dt.timedelta(days=4 + 9 * i),
            "failed" if i == 3 else "succeeded",
        )
    # The window before the default one: trends compare with it.
    for i in range(6):
        deploy("shop", f"shop-old-{i}", now - dt.timedelta(days=100 + 12 * i))

    def incident(
        service: str, ident: str, opened: dt.datetime, took: dt.timedelta | None, **extra: Any
    ) -> None:
        record = {
            "kind": "incident",
            "service": service,
            "id": ident,
            "opened_at": rfc3339(opened),
            "environment": "production",
            "title": f"{service} trouble {ident}",
            **extra,
        }
        if took is not None:
            record["resolved_at"] = rfc3339(opened + took)
        records.append(record)

    finished = {
        r["id"]: dt.datetime.fromisoformat(r["finished_at"])
        for r in records
        if r["kind"] == "deployment"
    }
    incident(
        "shop",
        "PD-1",
        finished["shop-5"] + 2 * dt.timedelta(hours=1),
        dt.timedelta(hours=1),
        deployment="shop-5",
    )
    incident("shop", "PD-2", finished["shop-9"] + dt.timedelta(hours=3), dt.timedelta(minutes=30))
    incident(
        "search", "PD-3", finished["search-1"] + dt.timedelta(hours=2), dt.timedelta(minutes=95)
    )
    incident("shop", "PD-4", now - 2 * day + dt.timedelta(hours=6), None)
    return records


def import_history(web: Web, now: dt.datetime) -> None:
    path: Path = web.tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history(now)))
    web.cli("import", str(path))


def report(web: Web, **params: str) -> dict[str, Any]:
    r = web.api.get("/dora", params=params)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def page_params(page: Page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.url).query))


def expect_cards(page: Page, data: dict[str, Any]) -> None:
    """Every card's value, tier and sample size as the page writes the API's figures."""
    for name in CARDS:
        fig = data["metrics"][name]
        card = page.locator(f'.metric-card[data-metric="{name}"]')
        # No value: a dash on the page (the terminal's hyphen reads as a minus sign there).
        value = "–" if fig["value"] is None else show(name, fig["value"])
        expect(card.locator(".metric-value")).to_have_text(value)
        # Below 5 deployments a figure gets a warning instead of a tier (docs/metrics.md).
        no_tier = "too few" if fig.get("warning") else "no tier"
        expect(card.locator(".tier-name")).to_have_text(fig["tier"] or no_tier)
        expect(card.locator(".metric-sample")).to_have_text(
            plural(fig["sample_size"], SAMPLE[name])
        )


def weeks_of(window: dict[str, Any]) -> int:
    """Monday-to-Sunday weeks touched by the window's days (the first and last may be cut)."""
    start = dt.date.fromisoformat(window["from"])
    end = dt.date.fromisoformat(window["to"])
    days = [start + dt.timedelta(days=k) for k in range((end - start).days)]
    return len({d - dt.timedelta(days=d.weekday()) for d in days})


def test_the_dashboard_shows_the_api_figures_for_each_view(web: Web, page: Page) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    import_history(web, now)
    signed_in(page, web, web.admin_token, next="/dora")
    expect(page.get_by_role("heading", name="DORA metrics")).to_be_visible()

    # All services, the last 90 days by weeks: the default view.
    everything = report(web)
    assert everything["metrics"]["deployment_frequency"]["sample_size"] > 0
    assert everything["metrics"]["change_failure_rate"]["value"] > 0
    expect_cards(page, everything)
    scope = page.locator(".dora-scope")
    expect(scope).to_contain_text(f"all services ({len(everything['scope']['services'])})")
    expect(scope).to_contain_text(everything["window"]["from"])
    # Trends: the window before holds deployments too, so there is a direction and a word.
    trend = page.locator('.metric-card[data-metric="deployment_frequency"] .metric-trend')
    expect(trend).to_contain_text(re.compile(r"[↑↓→] .*(better|worse|same)"))
    shot(page, "all-services")

    # One bar per week of the window, and the table behind the chart says the same numbers.
    bars = page.locator(".chart-deployments .chart-datum")
    assert len(everything["series"]) == weeks_of(everything["window"])
    expect(bars).to_have_count(weeks_of(everything["window"]))
    table_rows = page.locator(".chart-deployments table tbody tr")
    expect(table_rows).to_have_count(len(everything["series"]))
    expect(table_rows.nth(0).locator("td")).to_have_text(
        str(everything["series"][0]["deployments"])
    )
    expect(page.locator(".chart-lead .chart-datum")).to_have_count(len(everything["series"]))
    assert "Deployments per week" in (
        page.locator(".chart-deployments svg > title").text_content() or ""
    )

    # The value-stream split of lead time: imported history is all "unsplit".
    split = page.locator(".chart-stacked")
    expect(split.locator('.stack-legend li[data-stage="unsplit"]')).to_contain_text("100%")
    for stage in ("waiting", "ci", "staging", "approval", "production"):
        expect(split.locator(f'.stack-legend li[data-stage="{stage}"]')).to_be_visible()

    # One service, chosen in the filter: the URL says so, and the figures are that service's.
    page.get_by_label("Service").select_option("search")
    expect(page).to_have_url(re.compile(r"[?&]service=search"))
    search = report(web, service="search")
    assert (
        search["metrics"]["deployment_frequency"]["sample_size"]
        != (everything["metrics"]["deployment_frequency"]["sample_size"])
    )
    expect_cards(page, search)
    expect(scope).to_contain_text("search ·")
    shot(page, "one-service")

    # Another range: the last 30 days, then custom dates; each view is the URL's.
    page.get_by_label("Time range").select_option("30d")
    expect(page).to_have_url(re.compile(r"since=30d"))
    expect_cards(page, report(web, service="search", since="30d"))

    page.get_by_label("Service").select_option("")
    page.get_by_label("Time range").select_option("custom")
    start = (now - dt.timedelta(days=63)).date().isoformat()
    end = (now - dt.timedelta(days=7)).date().isoformat()
    page.get_by_label("From", exact=True).fill(start)
    page.get_by_label("To", exact=True).fill(end)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(rf"from={start}&to={end}"))
    custom = report(web, **{"from": start, "to": end})
    assert custom["window"]["days"] == 56
    expect_cards(page, custom)
    expect(page.locator(".chart-deployments .chart-datum")).to_have_count(
        weeks_of(custom["window"])
    )
    assert page_params(page) == {"from": start, "to": end}

    # A link reproduces the view: months as buckets, opened fresh.
    page.goto(f"{web.url}/dora?service=shop&since=180d&by=month")
    monthly = report(web, service="shop", since="180d", by="month")
    expect_cards(page, monthly)
    expect(page.locator(".chart-deployments .chart-datum")).to_have_count(len(monthly["series"]))
    expect(page.get_by_label("Buckets")).to_have_value("month")
    expect(page.get_by_label("Time range")).to_have_value("180d")
    shot(page, "monthly")
    # A window that makes no sense: the API's message, and no stale figures.
    page.goto(f"{web.url}/dora?from=2026-01-10&to=2026-01-01")
    expect(page.get_by_role("alert")).to_contain_text("is empty")
    expect(page.locator(".metric-card")).to_have_count(0)
    expect(page.get_by_label("From", exact=True)).to_have_value("2026-01-10")

    # Readable from 1024 px: nothing sticks out sideways.
    page.goto(f"{web.url}/dora?service=shop&since=180d&by=month")
    expect_cards(page, monthly)
    page.set_viewport_size({"width": 1024, "height": 768})
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    shot(page, "1024px")


def test_a_number_opens_what_is_behind_it(web: Web, page: Page) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    import_history(web, now)
    signed_in(page, web, web.admin_token, next="/dora")
    plain = report(web)
    expect_cards(page, plain)
    explained = report(web, explain="true")

    # The change failure rate: every deployment counted, and the incidents blamed on them.
    items = explained["metrics"]["change_failure_rate"]["explanation"]
    assert {i["kind"] for i in items} == {"deployment", "incident"}
    card = page.locator('.metric-card[data-metric="change_failure_rate"]')
    card.locator(".metric-value").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_contain_text("change failure rate")
    rows = dialog.locator("tbody tr")
    expect(rows).to_have_count(len(items))
    expect(dialog.locator(".explain-count")).to_contain_text(f"{len(items)} items")
    failed = [i for i in items if i["kind"] == "deployment" and i["how"].startswith("failed")]
    assert failed
    for item in failed[:3]:
        row = dialog.locator(f'tr[data-kind="deployment"][data-id="{item["id"]}"]')
        expect(row).to_contain_text(item["how"])
    # An incident links to its row on the incidents page.
    blamed = next(i for i in items if i["kind"] == "incident")
    link = dialog.locator(f'tr[data-kind="incident"][data-id="{blamed["id"]}"] a')
    # Shown by its imported id, linked to Conveyor's record of it.
    expect(link).to_have_attribute("href", f"/incidents?id={blamed['ref']}")
    shot(page, "explanation")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    # Focus goes back to the number that opened it (keyboard users keep their place).
    expect(card.locator(".metric-value")).to_be_focused()

    # Lead time, by keyboard from the p90: the commits, each with its value.
    commits = explained["metrics"]["lead_time"]["explanation"]
    page.locator('.metric-card[data-metric="lead_time"] .metric-p90').focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog.locator("tbody tr")).to_have_count(len(commits))
    first = commits[0]
    expect(dialog.locator(f'tr[data-kind="commit"][data-id="{first["id"]}"]')).to_contain_text(
        show("lead_time", first["value"])
    )
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # A week of the chart: only that week's deployments.
    week = next(k for k, row in enumerate(plain["series"]) if row["deployments"] > 0)
    bucket = plain["series"][week]
    in_week = [
        i
        for i in explained["metrics"]["deployment_frequency"]["explanation"]
        if bucket["start"] <= i["time"][:10] < bucket["end"]
    ]
    # By keyboard: the chart is one tab stop, the arrow keys move between its weeks.
    datums = page.locator(".chart-deployments .chart-datum")
    datums.first.focus()
    for _ in range(week):
        page.keyboard.press("ArrowRight")
    expect(datums.nth(week)).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog.locator("tbody tr")).to_have_count(len(in_week))
    expect(dialog.locator(".explain-count")).to_contain_text(
        f"{plural(len(in_week), 'item')} in this week"
    )
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Live: an incident opened now (nothing deployed within the attribution window blames it)
    # is an incident not restored yet (incident recovery: no deployment caused it); the page
    # follows without a reload.
    before = plain["metrics"]["incident_recovery"]
    r = web.api.post(
        "/incidents",
        json={"service": "search", "title": "search is down", "environment": "production"},
    )
    assert r.status_code == 201, r.text
    after = report(web)["metrics"]["incident_recovery"]
    assert after["incidents"] == before["incidents"] + 1
    incidents = page.locator('.metric-card[data-metric="incident_recovery"] .metric-extra')
    expect(incidents).to_have_text(
        f"{after['incidents']} ({after['not_restored']} not restored yet)"
    )
