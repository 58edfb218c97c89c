"""Services side by side on the DORA page, against a real server holding imported history of
three services: each service's row shows the figures `conveyor dora --service NAME` gives for
the same window, and picking a team shows its services with the team's figures."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from conveyor.cli.dora import show
from tests.metrics.test_dora_portfolio import FIVE, history
from tests.web.conftest import Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]
WINDOW = {"from": "2024-03-04", "to": "2024-03-18"}


def cli_report(web: Web, *args: str) -> dict[str, Any]:
    out = web.cli("dora", "--from", WINDOW["from"], "--to", WINDOW["to"], "--json", *args)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def expect_row(row: Locator, metrics: dict[str, Any]) -> None:
    for key in FIVE:
        expect(row.locator(f'td[data-metric="{key}"]')).to_have_text(
            show(key, metrics[key]["value"])
        )


def test_the_portfolio_shows_each_services_figures(web: Web, page: Page) -> None:
    path = web.tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history()))
    web.cli("import", str(path))
    web.cli("team", "create", "web", "--service", "shop", "--service", "search")
    signed_in(page, web, web.admin_token, next=f"/dora?from={WINDOW['from']}&to={WINDOW['to']}")
    expect(page.get_by_role("heading", name="Portfolio")).to_be_visible()

    table = page.locator(".portfolio-table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("th")).to_have_text(["ledger", "search", "shop"])
    for name in ("ledger", "search", "shop"):
        alone = cli_report(web, "--service", name)
        expect_row(table.locator(f'tbody tr[data-service="{name}"]'), alone["metrics"])
    everything = cli_report(web)
    expect(table.locator("tfoot th")).to_have_text("All services")
    expect_row(table.locator("tfoot tr"), everything["metrics"])
    shot(page, "all-services")

    # A team: its services only, and its figures together.
    page.get_by_label("Team").select_option("web")
    expect(page).to_have_url(re.compile(r"[?&]team=web"))
    expect(rows.locator("th")).to_have_text(["search", "shop"])
    expect(table.locator("tfoot th")).to_have_text("Team web")
    team = web.api.get("/dora/portfolio", params=WINDOW | {"team": "web"}).json()
    expect_row(table.locator("tfoot tr"), team["aggregate"]["metrics"])
    expect_row(
        table.locator('tbody tr[data-service="shop"]'),
        cli_report(web, "--service", "shop")["metrics"],
    )
    # The report above the table stays every service's: the team is the table's alone.
    expect(page.locator(".dora-scope")).to_contain_text("all services (3)")
    shot(page, "team")
