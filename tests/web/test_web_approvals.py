"""The approvals inbox in a real Chromium against a real `conveyor server`: a release waits for
approval before production; its author sees the buttons disabled with the reason (and the
server refuses them anyway), an approver approves it and production serves it; a rejection
needs a reason; a read-only viewer sees no buttons."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import GitRepo
from tests.delivery.harness import STAGED_THEN_APPROVED, pipeline
from tests.serverproc import until
from tests.web.conftest import APP, HEALTH, Web, shot, signed_in
from tests.web.test_web_screens import PHONE, fits

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Ada Author <ada@example.com> commits every change in tests (tests.conftest.GIT_ENV).
CHAIN = f"""\
service: shop
jobs:
  test:
    run: "true"
environments:
  staging:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
  production:
    after: staging
    approval: {{ approvers: [ops], required: 1 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""
LONG = 30_000


def files(version: str) -> dict[str, str]:
    return {"app.py": APP, "VERSION": version, "HEALTHY": "yes", "conveyor.yml": CHAIN}


def person(
    web: Web, name: str, scopes: str, *, groups: tuple[str, ...] = (), email: str = ""
) -> str:
    """A user known to the server, and a token of theirs with `scopes` to sign in with."""
    args = ["user", "add", name]
    for group in groups:
        args += ["--group", group]
    if email:
        args += ["--email", email]
    web.cli(*args)
    return web.token(f"{name}-browser", scopes, user=name)


def pending(web: Web) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = web.api.get("/approvals").json()
    return found


def release_waiting(web: Web, number: int, service: str = "shop") -> dict[str, Any]:
    run = web.trigger(service)
    assert web.wait_run(run["id"])["status"] == "succeeded"
    approval: dict[str, Any] = until(
        lambda: next((a for a in pending(web) if a["release"] == number), None),
        30,
        f"release {number} to wait for approval",
    )
    return approval


def new_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    context.set_default_timeout(10_000)
    return context.new_page()


def test_the_author_cannot_approve_an_approver_can_and_production_follows(
    web: Web, page: Page, browser: Browser
) -> None:
    ann = person(web, "ann", "approve", groups=("ops",), email="ada@example.com")
    olga_token = person(web, "olga", "approve", groups=("ops",))
    repo = web.service("shop", files("v1"), message="v1: the first shop")
    approval = release_waiting(web, 1)
    number = approval["id"]

    # The author: the card is there, the buttons are disabled and say why, in words.
    signed_in(page, web, ann, next="/approvals")
    card = page.get_by_role("article", name=re.compile("shop → production"))
    expect(card).to_contain_text("v1: the first shop")
    expect(card).to_contain_text("Ada Author")
    expect(card).to_contain_text("1 of group ops")
    expect(card.get_by_role("button", name="Approve")).to_be_disabled()
    expect(card.get_by_role("button", name="Reject")).to_be_disabled()
    expect(card.get_by_role("note")).to_have_text(
        re.compile("you authored [0-9a-f]{7} in the range being deployed")
    )
    shot(page, "approvals-author")

    # Bypassing the page does not help: the server refuses her session and her token.
    refused = page.request.post(
        f"{web.url}/api/v1/approvals/{number}/approve",
        headers={"X-Conveyor-CSRF": "1"},
        data={},
    )
    assert refused.status == 403
    assert "in the range being deployed: no self-approval" in refused.json()["error"]["message"]
    r = httpx.post(
        f"{web.url}/api/v1/approvals/{number}/approve",
        json={},
        headers={"Authorization": f"Bearer {ann}"},
    )
    assert r.status_code == 403

    # An approver, in a second browser: approving sends the release on to production.
    olga = new_page(browser)
    try:
        signed_in(olga, web, olga_token, next="/approvals")
        card = olga.get_by_role("article", name=re.compile("shop → production"))
        approve = card.get_by_role("button", name="Approve")
        expect(approve).to_be_enabled()
        expect(card.get_by_role("note")).to_have_count(0)
        shot(olga, "approvals-approver")
        approve.click()
        expect(olga.get_by_text("Nothing waits for approval.")).to_be_visible()
        # Focus stays in the page, on what was decided.
        expect(olga.locator("#approvals-status")).to_be_focused()
        recent = olga.locator("table.recent")
        expect(recent).to_contain_text("olga approved")
        # The author's page hears of it live: her card goes away without a reload.
        expect(page.get_by_text("Nothing waits for approval.")).to_be_visible()
        # The overview follows production to the new release.
        page.get_by_role("link", name="Overview", exact=True).click()
        tile = page.get_by_role("article", name="production")
        expect(tile).to_contain_text("Release 1", timeout=LONG)
        expect(tile).to_contain_text("healthy", timeout=LONG)

        olga.goto(f"{web.url}/services/shop/environments/production")
        expect(olga.locator("#current-release")).to_have_text(re.compile(r"^r1-"), timeout=LONG)
        expect(olga.get_by_role("heading", level=1)).to_contain_text("production")
        shot(olga, "environment-after-approval")
        production = until(
            lambda: next(
                (
                    e
                    for e in web.api.get("/environments").json()
                    if e["environment"] == "production" and e["healthy"]
                ),
                None,
            ),
            30,
            "production to be healthy",
        )
        assert httpx.get(production["url"], timeout=5).text == "v1"

        # The next release appears in the inbox live; rejecting it needs a reason.
        olga.goto(f"{web.url}/approvals")
        expect(olga.get_by_text("Nothing waits for approval.")).to_be_visible()
        repo.commit("v2: a risky change", files("v2"))
        release_waiting(web, 2)
        card = olga.get_by_role("article", name=re.compile("shop → production"))
        expect(card).to_contain_text("v2: a risky change", timeout=LONG)
        reject = card.get_by_role("button", name="Reject")
        reason = card.get_by_label("Reason")
        expect(reject).to_be_disabled()
        reason.fill("   ")
        expect(reject).to_be_disabled()
        reason.fill("not before the sale ends")
        expect(reject).to_be_enabled()
        reason.fill("")
        expect(reject).to_be_disabled()
        reason.fill("not before the sale ends")
        reject.click()
        expect(olga.get_by_text("Nothing waits for approval.")).to_be_visible()
        expect(olga.locator("#approvals-status")).to_be_focused()
        expect(olga.locator("#approvals-status")).to_contain_text(
            re.compile(r"^Rejected shop r2-\w+ for production: the approval is now rejected\.")
        )
        expect(olga.locator("table.recent tbody tr").first).to_contain_text(
            "olga rejected: not before the sale ends"
        )
        deployments = web.api.get(
            "/deployments", params={"service": "shop", "environment": "production"}
        ).json()
        assert deployments[0]["release"] == 2
        assert deployments[0]["status"] == "rejected"
        assert "not before the sale ends" in deployments[0]["reason"]
    finally:
        olga.context.close()


def test_a_read_only_viewer_sees_the_inbox_without_buttons(web: Web, page: Page) -> None:
    vera = person(web, "vera", "read")
    web.service("shop", files("v1"))
    release_waiting(web, 1)
    signed_in(page, web, vera, next="/approvals")
    card = page.get_by_role("article", name=re.compile("shop → production"))
    expect(card).to_contain_text("0 of 1")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Reject")).to_have_count(0)
    expect(page.get_by_label("Reason")).to_have_count(0)
    shot(page, "approvals-read-only")


FORGE_URL = "https://github.com/acme/shop.git"


def verified(name: str, version: str) -> dict[str, str]:
    return {
        "app.py": APP,
        "VERSION": version,
        "HEALTHY": "yes",
        # Staging verifies with a smoke step; the services differ only in their name.
        "conveyor.yml": pipeline(STAGED_THEN_APPROVED).replace("service: shop", f"service: {name}"),
    }


def on_github(web: Web) -> GitRepo:
    """shop's repository as the server knows it: a GitHub URL, which git on this machine reads
    from a local repository (`url.<path>.insteadOf`, in the server's own git configuration), so
    that the server mirrors and reads real commits while the forge's links are GitHub's. The
    server is restarted to take that configuration."""
    path = web.tmp_path / "repos" / "shop"
    path.mkdir(parents=True)
    repo = GitRepo(path)
    repo.git("init", "-q", "-b", "main")
    repo.commit("v1: the first shop", verified("shop", "v1"))
    home = web.tmp_path / "git-home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "{path}"]\n\tinsteadOf = {FORGE_URL}\n')
    web.env["HOME"] = str(home)
    web.server.stop()
    web.server.start()
    web.cli("service", "add", "shop", "--repo", FORGE_URL)
    return repo


def test_a_card_shows_what_serves_what_comes_and_how_staging_went_and_focus_follows(
    web: Web, page: Page
) -> None:
    olga = person(web, "olga", "approve", groups=("ops",))
    repo = on_github(web)
    first = release_waiting(web, 1)
    signed_in(page, web, olga, next="/approvals")

    # The first release: nothing serves yet, one commit, staging's checks and verification.
    card = page.locator(f"#approval-{first['id']}")
    expect(card.locator(f"#approval-{first['id']}-serving")).to_have_text("nothing yet")
    expect(card.locator(f"#approval-{first['id']}-brings")).to_have_text(
        re.compile(r"^1 commit by Ada Author")
    )
    # Without an earlier release there is no diff to show.
    expect(card.get_by_role("link", name="View the diff")).to_have_count(0)
    staging = card.locator(f'#approval-{first["id"]}-checks li[data-environment="staging"]')
    expect(staging).to_contain_text("succeeded")
    expect(staging.locator('li[data-outcome="pass"]')).to_have_count(2)
    expect(staging).to_contain_text("http")
    expect(staging).to_contain_text("1 verify step passed")
    shot(page, "approvals-context-first")

    # The only card decided: focus goes to the outcome, not to <body>.
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#approvals-status")).to_contain_text("Nothing else waits for approval")
    expect(page.locator("#approvals-status")).to_be_focused()
    until(
        lambda: next(
            (
                e
                for e in web.api.get("/environments", params={"service": "shop"}).json()
                if e["environment"] == "production" and e["release"] == 1 and not e["queue"]
            ),
            None,
        ),
        30,
        "production to serve release 1",
    )

    # Two commits by two people, then a second service waiting too.
    repo.write("VERSION", "v2")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "v2: faster checkout", "--author", "Bob Builder <bob@x.org>")
    repo.commit("v2: the copy", verified("shop", "v2"))
    second = release_waiting(web, 2)
    web.service("cart", verified("cart", "c1"))
    other = release_waiting(web, 3, "cart")

    card = page.locator(f"#approval-{second['id']}")
    expect(card.locator(f"#approval-{second['id']}-serving")).to_have_text(re.compile(r"^r1-"))
    expect(card.locator(f"#approval-{second['id']}-brings")).to_contain_text(
        "2 commits by Ada Author, Bob Builder"
    )
    commits = card.locator(f"#approval-{second['id']}-commits li")
    expect(commits).to_have_text(
        [re.compile("v2: the copy — Ada Author"), re.compile("v2: faster checkout — Bob Builder")]
    )
    shas = [
        r["sha"]
        for r in sorted(web.api.get("/releases").json(), key=lambda r: r["id"])
        if r["service"] == "shop"
    ]
    expect(card.get_by_role("link", name="View the diff")).to_have_attribute(
        "href", f"https://github.com/acme/shop/compare/{shas[0]}...{shas[1]}"
    )
    # cart's repository is a local path: no forge, no link. The first decision's message,
    # still focused, says what waits now.
    cart = page.locator(f"#approval-{other['id']}")
    expect(cart.locator(f"#approval-{other['id']}-brings")).to_contain_text("1 commit")
    expect(cart.get_by_role("link", name="View the diff")).to_have_count(0)
    expect(page.locator("#approvals-status")).to_contain_text("2 wait for a decision")
    # The cards with all this still fit a phone.
    page.set_viewport_size(PHONE)
    fits(page, "/approvals with two cards", PHONE["width"])
    shot(page, "approvals-context-phone")
    page.set_viewport_size({"width": 1024, "height": 800})
    shot(page, "approvals-context-second")

    # Deciding one card moves focus to the next card's Approve button.
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(f"#approval-{second['id']}")).to_have_count(0)
    expect(page.locator(f"#approval-{other['id']}-approve")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#approvals-status")).to_be_focused()
    expect(page.locator("#approvals-status")).to_contain_text(
        re.compile(r"Approved cart r3-\w+ for production")
    )
    assert page.evaluate("document.activeElement.id") == "approvals-status"
