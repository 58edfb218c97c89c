"""The web UI with only a keyboard, in a real Chromium against a real `conveyor server`: an
approver signs in, approves one release, rejects the next with a reason, rolls production back
and re-runs a run, pressing only Tab, Shift+Tab, arrow keys, Enter, Space and typing. Each
control shows a visible focus ring when Tab reaches it, and after each action focus lands on
something that carries on from there, never the bare page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.web.conftest import Web, shop_files, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LONG = 30_000
# A Tab walk never needs more presses than a page has controls; this bounds a missed target.
MOST_TABS = 80
PRODUCTION = "/services/shop/environments/production"


def focused(target: Locator) -> bool:
    return bool(target.evaluate("(el) => el === document.activeElement"))


def focus_ring(page: Page) -> str:
    """The focused element's outline as drawn: `<style> <width>`, 'none' when there is none."""
    ring: str = page.evaluate(
        """() => {
          const s = getComputedStyle(document.activeElement);
          return s.outlineStyle === 'none' || parseFloat(s.outlineWidth) === 0
            ? 'none' : `${s.outlineStyle} ${s.outlineWidth}`;
        }"""
    )
    return ring


def tab_to(page: Page, target: Locator, *, back: bool = False) -> None:
    """Press Tab (Shift+Tab with `back`) until `target` has focus; it shows a focus ring."""
    expect(target).to_be_visible()
    for _ in range(MOST_TABS):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if focused(target):
            break
    else:
        raise AssertionError(f"Tab never reached {target}")
    assert focus_ring(page) != "none", f"{target} has focus but no visible focus ring"


def focus_is_on(page: Page) -> str:
    """What has focus, for an assertion: its tag, id and text."""
    where: str = page.evaluate(
        """() => { const el = document.activeElement;
          const text = (el.textContent || '').trim().slice(0, 60);
          return `${el.tagName.toLowerCase()}#${el.id} ${text}`; }"""
    )
    return where


def test_sign_in_approve_reject_roll_back_and_re_run_with_the_keyboard(
    web: Web, page: Page
) -> None:
    web.user("olga", "correct horse battery", "approve,trigger", groups=("ops",))
    repo = web.service("shop", shop_files("v1"), message="v1: the first shop")
    first = web.trigger("shop")
    assert web.wait_run(first["id"])["status"] == "succeeded", web.logs()
    web.wait_approval(1)

    # Sign in: the token field has focus; back to the tabs, the arrow key picks the other one.
    page.goto(f"{web.url}/signin?next=/approvals")
    expect(page.get_by_label("API token")).to_be_focused()
    tab_to(page, page.get_by_role("tab", name="Token"), back=True)
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="User and password")).to_be_focused()
    expect(page.get_by_role("tab", name="User and password")).to_have_attribute(
        "aria-selected", "true"
    )
    tab_to(page, page.get_by_label("User name"))
    page.keyboard.type("olga")
    tab_to(page, page.get_by_label("Password", exact=True))
    page.keyboard.type("correct horse battery")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{web.url}/approvals")
    expect(page.locator("#who-name")).to_contain_text("olga")

    # Approve release 1 with Enter; focus goes on to what is left, not to the bare page.
    card = page.get_by_role("article", name=re.compile("shop → production"))
    expect(card).to_contain_text("v1: the first shop")
    tab_to(page, card.get_by_role("button", name="Approve"))
    shot(page, "approve-focused")
    page.keyboard.press("Enter")
    expect(page.locator("#toasts")).to_contain_text("Approved shop")
    expect(page.locator("#approvals-pending")).to_contain_text("Nothing waits for approval.")
    # Nothing else to decide: focus goes to the message that says what was done.
    expect(page.locator("#approvals-status")).to_be_focused()
    expect(page.locator("#approvals-status")).to_contain_text("Nothing else waits")
    assert focus_ring(page) != "none", focus_is_on(page)
    web.wait_serving("shop", "production", 1)

    # Reject release 2: a reason typed into its field, then Space on Reject.
    repo.commit("v2: a slower checkout", shop_files("v2"))
    assert web.wait_run(web.trigger("shop")["id"])["status"] == "succeeded"
    web.wait_approval(2)
    card = page.get_by_role("article", name=re.compile("shop → production"))
    expect(card).to_contain_text("v2: a slower checkout", timeout=LONG)
    tab_to(page, card.get_by_label("Reason"))
    page.keyboard.type("checkout got slower in staging")
    tab_to(page, card.get_by_role("button", name="Reject"))
    page.keyboard.press("Space")
    expect(page.locator("#toasts")).to_contain_text("Rejected shop")
    expect(page.locator("#approvals-recent")).to_contain_text("checkout got slower in staging")
    expect(page.locator("#approvals-status")).to_be_focused()
    assert focus_ring(page) != "none", focus_is_on(page)
    [rejected] = [a for a in web.api.get("/approvals?all=true").json() if a["release"] == 2]
    assert rejected["status"] == "rejected"

    # Release 3 reaches production (approved through the API), so there is one to roll back.
    repo.commit("v3: the checkout again", shop_files("v3"))
    assert web.wait_run(web.trigger("shop")["id"])["status"] == "succeeded"
    approval = web.wait_approval(3)
    olga = web.token("olga-api", "approve", user="olga")
    approved = web.api.post(
        f"/approvals/{approval['id']}/approve",
        json={},
        headers={"Authorization": f"Bearer {olga}"},
    )
    assert approved.status_code == 200, approved.text
    web.wait_serving("shop", "production", 3)

    # Roll back production to release 1: the dialog opens on Cancel, Tab reaches the
    # confirmation; afterwards focus is back on the Roll back button.
    page.goto(f"{web.url}{PRODUCTION}")
    expect(page.locator("#current-release")).to_have_text(re.compile(r"^r3-"))
    tab_to(page, page.get_by_label("Roll back to"))
    expect(page.get_by_label("Roll back to")).to_have_value("1")
    rollback = page.get_by_role("button", name="Roll back…")
    tab_to(page, rollback)
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(re.compile(r"Roll back shop production from r3-\w+ to r1-"))
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    assert focus_ring(page) != "none"
    confirm = dialog.get_by_role("button", name=re.compile(r"^Roll back to r1-"))
    tab_to(page, confirm)
    shot(page, "rollback-confirm-focused")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#current-release")).to_have_text(re.compile(r"^r1-"), timeout=LONG)
    expect(rollback).to_be_enabled()
    expect(rollback).to_be_focused()
    assert focus_ring(page) != "none", focus_is_on(page)
    web.wait_serving("shop", "production", 1)

    # Re-run run 1 from its page: Enter on the button; the new run's page has focus.
    page.goto(f"{web.url}/runs/{first['id']}")
    rerun = page.get_by_role("button", name="Re-run all jobs")
    tab_to(page, rerun)
    page.keyboard.press("Enter")
    expect(page.locator("#toasts")).to_contain_text(re.compile(r"Run #\d+ queued"))
    expect(page).not_to_have_url(f"{web.url}/runs/{first['id']}")
    expect(page.locator("main h1")).to_contain_text(re.compile(r"run #\d+"))
    expect(page.locator("main")).to_be_focused()
    number = re.search(r"/runs/(\d+)$", page.url)
    assert number is not None, page.url
    assert web.api.get(f"/runs/{number[1]}").json()["rerun_of"] == first["id"]
    # From there, Tab goes on into the new run's page (its first control), not the header.
    page.keyboard.press("Tab")
    assert page.evaluate("document.querySelector('main').contains(document.activeElement)"), (
        focus_is_on(page)
    )
