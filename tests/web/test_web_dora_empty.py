"""The DORA page before there is much to measure, against a real server: a new install (no
deployment at all) says so and what to do, with a dash and a reason for each figure and no
JavaScript error; one or two imported deployments give figures marked "too few" with the API's
warning instead of a tier; every card says what it measures; and on a 360 px phone no card's
content is wider than the card."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from conveyor.cli.dora import SAMPLE, plural
from tests.web.conftest import Web, shot, signed_in
from tests.web.test_web_dora import import_history, report, rfc3339

pytestmark = [pytest.mark.browser, pytest.mark.integration]
FIGURES = (
    "deployment_frequency",
    "lead_time",
    "change_failure_rate",
    "recovery_time",
    "rework_rate",
    "caught_before_traffic",
    "incident_recovery",
    "batch_size",
    "work_in_progress",
)


@pytest.fixture
def problems(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of the page, as they happen."""
    seen: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: seen.append(f"pageerror: {exc.message}"))
    return seen


def two_deployments(web: Web) -> None:
    """Two successful production deployments of one service, a day apart, with their commits."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    records = []
    for n in (1, 2):
        finished = now - dt.timedelta(days=3 - n)
        sha = f"{n:040x}"
        records.append(
            {
                "kind": "deployment",
                "service": "shop",
                "environment": "production",
                "id": f"shop-{n}",
                "commit": sha,
                "started_at": rfc3339(finished - dt.timedelta(minutes=10)),
                "finished_at": rfc3339(finished),
                "status": "succeeded",
                "commits": [
                    {"sha": sha, "committed_at": rfc3339(finished - dt.timedelta(hours=4))}
                ],
            }
        )
    path: Path = web.tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    web.cli("import", str(path))


def overflowing_cards(page: Page) -> list[str]:
    """The cards whose content is wider than the card (it would spill out or be cut off)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('.metric-card')]
          .filter((c) => c.scrollWidth > c.clientWidth)
          .map((c) => `${c.dataset.metric}: ${c.scrollWidth} > ${c.clientWidth}`)"""
    )
    return found


def test_a_new_install_says_there_is_nothing_yet_and_what_to_do(
    web: Web, page: Page, problems: list[str]
) -> None:
    signed_in(page, web, web.admin_token, next="/dora")
    data = report(web)
    assert data["metrics"]["lead_time"]["value"] is None

    empty = page.get_by_role("note")
    expect(empty).to_contain_text("No deployment to production in this window")
    expect(empty).to_contain_text("conveyor import")
    expect(empty).to_contain_text("docs/metrics.md")
    for name in FIGURES:
        card = page.locator(f'.metric-card[data-metric="{name}"]')
        fig = data["metrics"][name]
        if fig["value"] is None:
            expect(card.locator(".metric-value")).to_have_text("–")
            expect(card.locator(".metric-reason")).not_to_be_empty()
        expect(card.locator(".metric-sample")).to_have_text(
            plural(fig["sample_size"], SAMPLE[name])
        )
    # The reasons a person reads, not the API's nulls.
    lead = page.locator('.metric-card[data-metric="lead_time"]')
    expect(lead.locator(".metric-reason")).to_have_text("no commit was deployed in this window")
    expect(
        lead.get_by_role("button", name="no value: lead time for changes — show what is behind it")
    ).to_be_visible()
    assert "null" not in (page.locator(".dora").inner_text())
    assert "undefined" not in (page.locator(".dora").inner_text())
    # No trend charts of empty buckets.
    expect(page.locator(".chart-deployments")).to_have_count(0)
    shot(page, "empty")
    assert problems == []


def test_every_card_says_what_it_measures(web: Web, page: Page, problems: list[str]) -> None:
    signed_in(page, web, web.admin_token, next="/dora")
    cards = page.locator(".metric-card")
    expect(cards).to_have_count(len(FIGURES))
    for name in FIGURES:
        card = page.locator(f'.metric-card[data-metric="{name}"]')
        definition = card.locator(".metric-definition")
        expect(definition).to_be_hidden()
        # A <summary>: a button to the keyboard and to screen readers, named after its card.
        summary = card.locator(".metric-about summary")
        summary.focus()
        page.keyboard.press("Enter")
        expect(definition).to_be_visible()
        text = definition.inner_text()
        assert text.endswith("."), text
        assert ". " not in text, f"more than one sentence: {text}"
    caught = page.locator('.metric-card[data-metric="caught_before_traffic"] .metric-definition')
    expect(caught).to_contain_text("stopped by their checks before taking production traffic")
    assert problems == []


def test_two_deployments_are_too_few_for_a_tier(web: Web, page: Page, problems: list[str]) -> None:
    two_deployments(web)
    signed_in(page, web, web.admin_token, next="/dora")
    data = report(web)
    lead = data["metrics"]["lead_time"]
    assert lead["value"] is not None
    assert lead["tier"] is None
    assert "small sample: 2 deployments" in lead["warning"]

    expect(page.get_by_role("note")).to_have_count(0)  # deployed: no empty state
    # The window starts with the history, and the page says so in its own words.
    assert "the first production deployment" in data["window"]["note"]
    note = page.locator(".dora-window-note")
    expect(note).to_contain_text("the first production deployment")
    expect(note).to_contain_text("choose a time range above")
    for name in FIGURES:
        fig = data["metrics"][name]
        card = page.locator(f'.metric-card[data-metric="{name}"]')
        if fig.get("warning"):
            expect(card.locator(".tier-name")).to_have_text("too few")
            expect(card.locator(".metric-warning")).to_have_text(fig["warning"])
        else:
            expect(card.locator(".metric-warning")).to_have_count(0)
    card = page.locator('.metric-card[data-metric="lead_time"]')
    expect(card.locator(".metric-value")).to_have_text("4h")
    expect(card.locator(".tier-name")).to_have_text("too few")
    shot(page, "two-deployments")
    assert problems == []


@pytest.mark.parametrize("store", ["empty", "two", "history"])
def test_cards_fit_a_360px_phone(web: Web, page: Page, problems: list[str], store: str) -> None:
    if store == "two":
        two_deployments(web)
    elif store == "history":
        import_history(web, dt.datetime.now(dt.UTC).replace(microsecond=0))
    page.set_viewport_size({"width": 360, "height": 740})
    signed_in(page, web, web.admin_token, next="/dora")
    expect(page.locator(".metric-card")).to_have_count(len(FIGURES))
    # Open every definition too: the longest text a card holds.
    for summary in page.locator(".metric-about summary").all():
        summary.click()
    assert overflowing_cards(page) == []
    # Nor does the page's own content stick out sideways (the shell's header is not this page's).
    page_width = page.evaluate("document.querySelector('.dora').getBoundingClientRect().right")
    assert page_width <= 360
    sticking_out = page.evaluate(
        """() => { const dora = document.querySelector('.dora');
          return dora.scrollWidth - dora.clientWidth; }"""
    )
    assert sticking_out <= 0
    shot(page, f"360px-{store}")
    assert problems == []
