"""Delivery through the API: environments, approvals by token and by a signed Slack button, the
audit log, and notices sent to a real local webhook receiver with a valid HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.server.conftest import API, Api, Serve, until

from conveyor.notify.webhook import verify_webhook

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HOOK_SECRET = "hook-secret-for-tests"


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def slack_request(
    approval_id: int, user_id: str, action: str, secret: str
) -> tuple[bytes, dict[str, str]]:
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": "olga.s", "team_id": "T0"},
        "actions": [
            {"action_id": f"conveyor_{action}", "value": str(approval_id), "type": "button"}
        ],
        "response_url": "https://hooks.slack.com/actions/T0/1/x",
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.mark.integration
def test_approvals_by_token_and_by_a_signed_slack_button_with_notices_and_audit(
    serve: Serve, repo: GitRepo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    repo.commit(
        "v1",
        {
            "app.py": APP,
            "VERSION": "v1",
            "HEALTHY": "yes",
            "conveyor.yml": f"""
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    approval: {{ approvers: [ops], required: 2 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
notify:
  - webhook: {{ url: "{receiver.url}", secret: "${{{{ secrets.HOOK_SECRET }}}}" }}
    on: [approval.requested, deployment.succeeded]
""",
        },
    )

    async def body(api: Api) -> None:
        for name, slack in (("olga", "U_OLGA"), ("pat", None)):
            r = await api.post("/users", {"name": name, "groups": ["ops"], "slack_id": slack})
            assert r.status_code == 201, r.text
        await api.register("shop", repo.path)
        # The notifier's ${{ secrets.HOOK_SECRET }} is a secret of the service, as a job's is.
        r = await api.client.put(
            f"{API}/services/shop/secrets/HOOK_SECRET",
            json={"value": HOOK_SECRET},
            headers=api.auth(api.admin),
        )
        assert r.status_code == 200, r.text
        run = await api.trigger("shop")
        assert (await api.wait_run(run["id"]))["status"] == "succeeded"

        async def pending() -> Any:
            found = (await api.get("/approvals")).json()
            return found[0] if found else None

        approval = await until(pending, 20, "the approval request")
        number = approval["id"]
        assert (approval["required"], approval["approved"]) == (2, 0)
        [env] = (await api.get("/environments", params={"service": "shop"})).json()
        assert env["queue"][0]["status"] == "awaiting_approval"

        nobody = api.token("approve")
        r = await api.post(f"/approvals/{number}/approve", {}, token=nobody)
        assert r.status_code == 403
        assert "no user" in r.json()["error"]["message"]
        reader = api.token("read", user="olga")
        r = await api.post(f"/approvals/{number}/approve", {}, token=reader)
        assert r.status_code == 403

        forged, headers = slack_request(number, "U_OLGA", "approve", "wrong-secret")
        r = await api.client.post(f"{API}/slack/actions", content=forged, headers=headers)
        assert r.status_code == 401
        assert "signature" in r.json()["error"]["message"]
        body_, headers = slack_request(number, "U_OLGA", "approve", SIGNING_SECRET)
        r = await api.client.post(f"{API}/slack/actions", content=body_, headers=headers)
        assert r.status_code == 200, r.text
        assert "approve by olga" in r.json()["text"]

        pat = api.token("approve", user="pat")
        r = await api.post(
            f"/approvals/{number}/approve", {"reason": "second pair of eyes"}, token=pat
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"

        async def live() -> Any:
            [env] = (await api.get("/environments", params={"service": "shop"})).json()
            return env if env["release"] == 1 and env["healthy"] else None

        env = await until(live, 30, "production to serve release 1")
        assert env["url"].startswith("http://127.0.0.1:")
        await until(lambda: _async(len(receiver.requests) >= 2), 20, "two notices at the receiver")
        audit = (await api.get("/audit")).json()
        decisions = [
            (e["actor"], e["data"]["via"]) for e in audit if e["type"] == "approval.decision"
        ]
        assert sorted(decisions) == [("olga", "slack"), ("pat", "api")]

    try:
        serve(body)
    finally:
        stop_released_processes(repo.path.parent / "home")
    assert receiver.events() == ["approval.requested", "deployment.succeeded"]
    for headers, raw in receiver.requests:
        assert verify_webhook(
            HOOK_SECRET,
            headers["X-Conveyor-Timestamp"],
            headers["X-Conveyor-Signature-256"],
            raw,
        )
    assert json.loads(receiver.requests[0][1])["approval_id"] is not None


async def _async(value: Any) -> Any:
    return value
