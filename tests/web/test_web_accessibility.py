"""axe-core (from npm, tests/web/axe/) on every page and state of the web UI, in a real Chromium
against a real `conveyor server`, in the light and the dark colour scheme, on a desktop and a
360 px phone: no violation of impact serious or critical. A failure names each rule, the
elements it found and why.

To cover a new page or state, add a :class:`Screen` to SCREENS (and what it needs to the
`site` fixture)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.web.conftest import ROOT, TIMEOUT_MS, Web, shop_files, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

AXE = ROOT / "tests" / "web" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")

# Ada Author <ada@example.com> commits every change in tests (tests.conftest.GIT_ENV); olga
# approves.
QUIET = """\
service: docs
jobs:
  build:
    run: "true"
"""
# A failing job, its error in red: the page opens at the failed step.
BROKEN = """\
service: broken
jobs:
  lint:
    run: "printf '\\\\033[31merror\\\\033[0m: line too long\\\\n'; exit 1"
"""
UNKNOWN = "/no/such/page"
PORTFOLIO = '.portfolio tr[data-service="shop"]'
# A wide table scrolls inside its own box on a phone: that box must be reachable by keyboard.
PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One server for the module: release 1 approved and in production, release 2 waiting
    for approval, an open incident, a team, and a service `docs` that has never deployed
    (DORA's empty state)."""
    web = Web(Path(tmp_path_factory.mktemp("axe")))
    try:
        web.cli("user", "add", "olga", "--group", "ops")
        olga = web.token("olga-approver", "approve", user="olga")
        repo = web.service("shop", shop_files("v1"), message="v1: the first shop")
        web.service("docs", {"conveyor.yml": QUIET})
        web.service("broken", {"conveyor.yml": BROKEN})
        web.cli("team", "create", "storefront", "--service", "shop,docs")
        for release in (1, 2):
            if release == 2:
                repo.commit("v2: a faster checkout", shop_files("v2"))
            run = web.trigger("shop")
            assert web.wait_run(run["id"])["status"] == "succeeded", web.logs()
            approval = web.wait_approval(release)
            if release == 1:
                r = httpx.post(
                    f"{web.url}/api/v1/approvals/{approval['id']}/approve",
                    json={},
                    headers={"Authorization": f"Bearer {olga}"},
                    timeout=15,
                )
                assert r.status_code == 200, r.text
                web.wait_serving("shop", "production", 1)
        failed = web.trigger("broken")
        assert web.wait_run(failed["id"])["status"] == "failed", web.logs()
        web.open_incident("shop", "checkout answers slowly", "production")
        yield web
    finally:
        web.close()


def opens_dialog(opener: str) -> Callable[[Page], None]:
    """A state: the dialog that the first control matching CSS `opener` opens."""

    def act(page: Page) -> None:
        page.locator(opener).first.click()
        expect(page.locator("dialog[open]")).to_be_visible()

    return act


def searched_log(page: Page) -> None:
    page.get_by_label("Search log").fill("shop")
    expect(page.locator(".log mark").first).to_be_visible()


def refused_sign_in(page: Page) -> None:
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter a token.")


def resolved_incidents(page: Page) -> None:
    page.get_by_role("tab", name="Resolved").click()
    expect(page.get_by_role("tab", name="Resolved")).to_have_attribute("aria-selected", "true")


def show_test_log(page: Page) -> None:
    page.get_by_role("link", name=re.compile(r"^test\b")).click()
    expect(page.locator("main")).to_contain_text("testing the shop")


@dataclass(frozen=True)
class Screen:
    """A page, the text that shows once its data is drawn, and an optional step into a state."""

    name: str
    path: str
    shows: str
    then: Callable[[Page], None] | None = None
    signed_in: bool = True
    # CSS of a part that is drawn after the rest (its own request), to wait for as well.
    later: str | None = None


SCREENS = [
    Screen("sign-in", "/signin", "Sign in", signed_in=False),
    Screen("sign-in, refused", "/signin", "Sign in", then=refused_sign_in, signed_in=False),
    Screen("overview", "/", "shop"),
    Screen("runs", "/runs", "v2: a faster checkout"),
    Screen("run with its log", "/runs/1", "built the shop"),
    Screen("run, another job's log", "/runs/1", "built the shop", then=show_test_log),
    Screen("run, a search in its log", "/runs/1", "built the shop", then=searched_log),
    Screen("failed run", "/runs/3", "line too long"),
    Screen("releases", "/releases", "run #1"),
    Screen("release", "/releases/1", "production"),
    Screen("release awaiting approval", "/releases/2", "staging"),
    Screen("compare two releases", "/releases/1/compare/2", "v2: a faster checkout"),
    Screen("deployments", "/deployments", "production"),
    Screen("deployment", "/deployments/1", "staging"),
    Screen("approvals", "/approvals", "v2: a faster checkout"),
    Screen("environment", "/services/shop/environments/production", "production"),
    Screen(
        "environment, roll back dialog",
        "/services/shop/environments/staging",
        "staging",
        then=opens_dialog("main button:has-text('Roll back')"),
    ),
    Screen("incidents", "/incidents", "checkout answers slowly"),
    Screen("incident", "/incidents/1", "checkout answers slowly"),
    Screen("incidents, resolved", "/incidents", "checkout answers slowly", then=resolved_incidents),
    Screen("DORA", "/dora?service=shop", "Deployment frequency", later=PORTFOLIO),
    Screen(
        "DORA, what is behind a number",
        "/dora?service=shop",
        "Deployment frequency",
        then=opens_dialog("main [aria-haspopup=dialog]"),
        later=PORTFOLIO,
    ),
    Screen(
        "DORA, no deployments yet", "/dora?service=docs", "Deployment frequency", later=PORTFOLIO
    ),
    Screen("teams", "/teams", "storefront"),
    Screen("inbox", "/inbox", "Inbox"),
    Screen("not found", UNKNOWN, "Page not found"),
]

# axe-core's own report, cut to what a failure message needs. Its default rules, and one it
# counts as experimental: a control's accessible name must contain its visible text (WCAG 2.5.3),
# which the job graph once broke.
RUN_AXE = """async (impacts) => {
  const result = await axe.run(document, {resultTypes: ['violations'],
    rules: {'label-content-name-mismatch': {enabled: true}}});
  return result.violations
    .filter((v) => impacts.includes(v.impact))
    .map((v) => ({id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => ({target: n.target.join(' '), why: n.failureSummary}))}));
}"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(
            f"{AXE.relative_to(ROOT)} is missing: install it with `make setup` "
            "(cd tests/web/axe && npm ci; .ci/run does this)"
        )
    return AXE.read_text(encoding="utf-8")


def violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    # Through the DevTools protocol, so the page's Content-Security-Policy does not apply to it.
    page.evaluate(axe_source)
    found: list[dict[str, Any]] = page.evaluate(RUN_AXE, list(BLOCKING))
    return found


def report(found: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for screen, problems in found.items():
        for v in problems:
            lines.append(f"{screen}: {v['id']} ({v['impact']}): {v['help']}")
            for node in v["nodes"][:8]:
                why = " ".join(node["why"].split())
                lines.append(f"    {node['target']}  — {why[:300]}")
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop-1280", "phone-360"])
def test_no_serious_or_critical_violation_on_any_page(
    axe_source: str,
    site: Web,
    browser: Browser,
    scheme: Literal["light", "dark"],
    size: ViewportSize,
) -> None:
    found: dict[str, list[dict[str, Any]]] = {}
    for signed in (False, True):
        context = browser.new_context(viewport=size, color_scheme=scheme)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            if signed:
                signed_in(page, site, site.admin_token)
            for screen in SCREENS:
                if screen.signed_in != signed:
                    continue
                page.goto(f"{site.url}{screen.path}")
                expect(page.locator("main")).to_contain_text(screen.shows)
                expect(page.locator("main .loading")).to_have_count(0)
                if screen.later is not None:
                    expect(page.locator(screen.later).first).to_be_visible()
                if screen.then is not None:
                    screen.then(page)
                problems = violations(page, axe_source)
                if problems:
                    found[screen.name] = problems
                    name = re.sub(r"[^a-z0-9]+", "-", screen.name.lower())
                    shot(page, f"{scheme}-{size['width']}-{name}")
        finally:
            context.close()
    assert not found, f"axe-core, {scheme} scheme, {size['width']} px:\n{report(found)}"
