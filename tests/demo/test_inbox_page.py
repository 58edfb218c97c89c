"""The inbox page (`notify: [{inbox: {}}]`) against a real server: the approval request is there
with a link to the approvals page; once someone approves, the deployment's notice arrives on
the open page by itself, marked new; the API says the same."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.serverproc import until
from tests.web.conftest import (  # noqa: F401 - fixtures used by name
    APP,
    HEALTH,
    Web,
    browser,
    page,
    playwright,
    shot,
    signed_in,
    web,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PIPELINE = f"""
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    approval: {{ approvers: [ops], required: 1 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
notify:
  - inbox: {{}}
    on: [approval.requested, deployment.succeeded]
"""


def test_notices_arrive_in_the_inbox_live(web: Web, page: Page) -> None:  # noqa: F811
    web.service(
        "shop", {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": PIPELINE}
    )
    assert web.api.post("/users", json={"name": "olga", "groups": ["ops"]}).status_code == 201
    olga = web.token("olga", "approve", user="olga")
    run = web.trigger("shop")
    assert web.wait_run(run["id"])["status"] == "succeeded"
    [request] = until(lambda: web.api.get("/inbox").json(), 20, "the approval request notice")
    assert request["event"] == "approval.requested"

    signed_in(page, web, web.admin_token, next="/inbox")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    notice = page.locator(f"#notice-{request['id']}")
    expect(notice).to_contain_text("Approval requested")
    expect(notice).to_contain_text("waits for approval")
    expect(
        notice.get_by_role("link", name=f"approval #{request['approval_id']}")
    ).to_have_attribute("href", "/approvals")
    expect(page.get_by_role("link", name="Inbox")).to_have_attribute("aria-current", "page")

    r = web.api.post(
        f"/approvals/{request['approval_id']}/approve",
        json={"reason": "fine"},
        headers={"Authorization": f"Bearer {olga}"},
    )
    assert r.status_code == 200, r.text
    live = page.locator('.notice[data-event="deployment.succeeded"]')
    expect(live).to_contain_text("is live in production", timeout=20_000)
    expect(live).to_contain_text(re.compile("new", re.I))
    shot(page, "inbox")
    events = [n["event"] for n in web.api.get("/inbox", params={"service": "shop"}).json()]
    assert events == ["deployment.succeeded", "approval.requested"]
    # Seen once: shown again, nothing is new.
    page.reload()
    expect(page.locator(".notice").first).to_be_visible()
    expect(page.locator(".notice-new")).to_have_count(0)
