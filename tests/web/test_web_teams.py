"""The Teams page against a real server holding imported history of three services: a team lead
creates a team, adds and removes services, renames it, and sees its services' DORA figures side
by side on the DORA page; bad input (a bad or empty name, an unknown service, a name in use, a
service twice) is said in the page and nothing is stored; a reader, or an admin limited to a
service (whom the API refuses too), sees the teams without the controls; the page fits a
360 px phone and follows changes made elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.metrics.test_dora_portfolio import history
from tests.web.conftest import Web, shot, signed_in
from tests.web.test_web_dora_portfolio import WINDOW, cli_report, expect_row

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def imported(web: Web) -> None:
    path = web.tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history()))
    web.cli("import", str(path))


def stored(web: Web) -> list[tuple[str, list[str]]]:
    teams: list[dict[str, Any]] = web.api.get("/teams").json()
    return [(t["name"], t["services"]) for t in teams]


def test_a_team_lead_makes_a_team_and_sees_it_side_by_side(web: Web, page: Page) -> None:
    imported(web)
    web.user("lead", "lead-password-1", "admin")
    signed_in(page, web, user="lead", password="lead-password-1")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
    expect(page.get_by_role("heading", name="Teams", exact=True)).to_be_visible()
    expect(page.locator("#teams-list")).to_contain_text("No team yet")

    form = page.locator("form.team-new")
    name = form.get_by_label("Name", exact=True)
    services = form.get_by_label("Services", exact=True)
    create = form.get_by_role("button", name="Create team")
    error = page.locator("#team-new-error")
    # Bad input: the server's reason in the page, and nothing stored.
    for typed, listed, message in [
        ("bad name!", "shop", "'bad name!' is not a team name"),
        ("", "shop", "a team needs a name"),
        ("web", "shopp", "unknown service: shopp"),
        ("web", "", "a team needs at least one service: name them above"),
    ]:
        name.fill(typed)
        services.fill(listed)
        create.click()
        expect(error).to_contain_text(message)
        assert stored(web) == []
    expect(services).to_have_attribute("aria-invalid", "true")
    shot(page, "refused")

    name.fill("web")
    services.fill("shop")
    create.click()
    card = page.locator('article.team[data-team="web"]')
    expect(card.locator(".team-services li > span")).to_have_text(["shop"])
    expect(error).to_be_hidden()
    expect(name).to_have_value("")

    # Two services added, one at a time, from the team's card.
    add = card.get_by_label("Add a service")
    for service in ("search", "ledger"):
        add.fill(service)
        card.get_by_role("button", name="Add", exact=True).click()
        card = page.locator('article.team[data-team="web"]')
        add = card.get_by_label("Add a service")
        expect(card.locator(f'.team-services li[data-service="{service}"]')).to_be_visible()
        # Ready for the next one: the field empty, and the focus on it.
        expect(add).to_have_value("")
        expect(add).to_be_focused()
    assert stored(web) == [("web", ["ledger", "search", "shop"])]
    # A service twice is refused in the card.
    add.fill("shop")
    card.get_by_role("button", name="Add", exact=True).click()
    expect(card.get_by_role("alert")).to_have_text("team 'web' already has shop")
    card.get_by_role("button", name="Remove ledger from web").click()
    card = page.locator('article.team[data-team="web"]')
    expect(card.locator(".team-services li")).to_have_count(2)
    assert stored(web) == [("web", ["search", "shop"])]

    # Renamed; an empty name is refused and the team keeps its own.
    rename = card.get_by_label("Name", exact=True)
    rename.fill("")
    card.get_by_role("button", name="Rename").click()
    expect(card.get_by_role("alert")).to_have_text("a team needs a name")
    rename.fill("storefront")
    card.get_by_role("button", name="Rename").click()
    card = page.locator('article.team[data-team="storefront"]')
    expect(card).to_be_visible()
    assert stored(web) == [("storefront", ["search", "shop"])]
    # A name in use is refused for a new team too.
    name.fill("storefront")
    services.fill("ledger")
    create.click()
    expect(error).to_contain_text("there is already a team named 'storefront'")
    assert stored(web) == [("storefront", ["search", "shop"])]
    shot(page, "team")

    # The team's portfolio: its two services side by side, with the team's own figures.
    card.get_by_role("link", name="DORA side by side for storefront").click()
    expect(page).to_have_url(f"{web.url}/dora?team=storefront")
    rows = page.locator(".portfolio-table tbody tr")
    expect(rows.locator("th")).to_have_text(["search", "shop"])
    page.goto(f"{web.url}/dora?from={WINDOW['from']}&to={WINDOW['to']}&team=storefront")
    table = page.locator(".portfolio-table")
    expect(table.locator("tfoot th")).to_have_text("Team storefront")
    for service in ("search", "shop"):
        alone = cli_report(web, "--service", service)["metrics"]
        expect_row(table.locator(f'tbody tr[data-service="{service}"]'), alone)
    team = web.api.get("/dora/portfolio", params=WINDOW | {"team": "storefront"}).json()
    expect_row(table.locator("tfoot tr"), team["aggregate"]["metrics"])
    shot(page, "portfolio")

    # Deleted, once confirmed.
    page.goto(f"{web.url}/teams")
    page.locator('article.team[data-team="storefront"]').get_by_role(
        "button", name="Delete team"
    ).click()
    page.locator("#confirm").get_by_role("button", name="Delete team").click()
    expect(page.locator("#teams-list")).to_contain_text("No team yet")
    assert stored(web) == []


def test_readers_see_teams_without_controls_and_the_page_fits_a_phone(web: Web, page: Page) -> None:
    imported(web)
    web.cli("team", "create", "payments-and-checkout", "--service", "shop,search,ledger")
    page.set_viewport_size({"width": 360, "height": 740})
    signed_in(page, web, web.admin_token, next="/teams")
    card = page.locator('article.team[data-team="payments-and-checkout"]')
    expect(card.locator(".team-services li")).to_have_count(3)
    expect(page.get_by_role("button", name="Create team")).to_be_visible()
    fits = """() => { const el = document.querySelector('.teams');
      return [el.getBoundingClientRect().right, el.scrollWidth - el.clientWidth]; }"""
    right, sticking_out = page.evaluate(fits)
    assert right <= 360
    assert sticking_out <= 0
    shot(page, "360px-admin")

    page.get_by_role("button", name="Sign out").click()
    reader = web.token("reader", "read")
    signed_in(page, web, reader, next="/teams")
    expect(page.locator(".teams-readonly")).to_contain_text("takes the admin scope")
    expect(card.locator(".team-services li")).to_have_text(["ledger", "search", "shop"])
    expect(page.get_by_role("button", name="Create team")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete team")).to_have_count(0)
    expect(card.get_by_role("link", name="DORA side by side")).to_be_visible()
    # Another person's change shows without reloading the page.
    changed = web.api.patch("/teams/payments-and-checkout", json={"remove": ["ledger"]})
    assert changed.status_code == 200, changed.text
    expect(card.locator(".team-services li")).to_have_text(["search", "shop"])
    right, sticking_out = page.evaluate(fits)
    assert right <= 360
    assert sticking_out <= 0
    shot(page, "360px-reader")

    # An admin limited to one service may not change teams through the API: nor here.
    page.get_by_role("button", name="Sign out").click()
    web.cli(
        "user",
        "add",
        "shopkeeper",
        "--password",
        "--scope",
        "admin",
        "--service",
        "shop",
        input="shop-password-1\nshop-password-1\n",
    )
    signed_in(page, web, user="shopkeeper", password="shop-password-1", next="/teams")
    expect(card.locator(".team-services li")).to_have_text(["search", "shop"])
    expect(page.locator(".teams-readonly")).to_contain_text("no service limits")
    expect(page.get_by_role("button", name="Create team")).to_have_count(0)
    expect(card.get_by_role("button")).to_have_count(0)
