"""Generic webhooks against a real HTTP receiver on 127.0.0.1: the exact body and headers,
the signature a receiver can check (and the one in docs/notifications.md), and how each kind
of failure is classified for retrying.

`Receiver` is also used by the Slack and delivery tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conveyor.notify.base import Notice, NotifyError
from conveyor.notify.webhook import (
    USER_AGENT,
    WebhookNotifier,
    send_webhook,
    sign_webhook,
    verify_webhook,
)
from tests.serverproc import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Responder = Callable[[Received], tuple[int, str]]


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers with
    `respond(request)` (status, text body). The request is recorded before the answer is sent,
    so once the client has its response the record is there: no waiting needed."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda _request: (200, "ok"))
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                with receiver._lock:
                    receiver.requests.append(request)
                status, text = receiver.respond(request)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output is for the tests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def scripted(*answers: tuple[int, str]) -> Responder:
    """Answers in order; the last one repeats."""
    remaining = list(answers)

    def respond(_request: Received) -> tuple[int, str]:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return respond


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def unreachable_url() -> str:
    """Nothing listens on a port just found free: connection refused, at once."""
    return f"http://127.0.0.1:{free_port()}/hook"


def make_notice(**overrides: Any) -> Notice:
    values: dict[str, Any] = {
        "id": 17,
        "event": "deployment.failed",
        "service": "shop-api",
        "summary": "shop-api r12-ab12cd3 failed its health check in production: GET /healthz → 503",
        "at": "2026-11-26T10:15:00+00:00",
        "environment": "production",
        "release": "r12-ab12cd3",
        "sha": "ab12cd3ef4567890ab12cd3ef4567890ab12cd3e",
        "deployment_id": 9,
        "url": "https://conveyor.example.com/deployments/9",
        "fields": {"Check": "GET /healthz"},
    }
    values.update(overrides)
    return Notice(**values)


def test_delivery_is_canonical_json_with_a_verifiable_signature(receiver: Receiver) -> None:
    notice = make_notice()
    before = int(time.time())
    asyncio.run(send_webhook(WebhookNotifier(url=receiver.url(), secret="s3cret"), notice))
    after = int(time.time())

    [request] = receiver.requests
    assert request.path == "/hook"
    assert (
        request.body == json.dumps(notice.as_json(), sort_keys=True, separators=(",", ":")).encode()
    )
    assert json.loads(request.body)["event"] == "deployment.failed"
    h = request.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == USER_AGENT
    assert re.fullmatch(r"conveyor/\S+", h["user-agent"])
    assert h["x-conveyor-event"] == "deployment.failed"
    assert h["x-conveyor-delivery"] == "17"
    timestamp = h["x-conveyor-timestamp"]
    assert before <= int(timestamp) <= after

    # Independently of the module's own signer: HMAC-SHA256 over "<timestamp>." + body.
    mac = hmac.new(b"s3cret", f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert h["x-conveyor-signature-256"] == f"sha256={mac.hexdigest()}"
    signature = h["x-conveyor-signature-256"]
    assert verify_webhook("s3cret", timestamp, signature, request.body)
    assert not verify_webhook("another", timestamp, signature, request.body)
    changed = request.body.replace(b"production", b"staging")
    assert changed != request.body
    assert not verify_webhook("s3cret", timestamp, signature, changed)
    # A captured delivery replayed later, or with its timestamp rewritten, fails.
    assert not verify_webhook("s3cret", timestamp, signature, request.body, now=after + 301)
    assert not verify_webhook("s3cret", str(int(timestamp) + 1), signature, request.body)


def test_no_signature_header_without_a_secret(receiver: Receiver) -> None:
    asyncio.run(send_webhook(WebhookNotifier(url=receiver.url()), make_notice()))
    [request] = receiver.requests
    assert "x-conveyor-signature-256" not in request.headers
    assert request.headers["x-conveyor-timestamp"].isdigit()


def test_sign_and_verify_edge_cases() -> None:
    body = b'{"id":1}'
    assert sign_webhook("k", "1700000000", body) == (
        "sha256=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    )
    good = sign_webhook("k", "1700000000", body)
    assert verify_webhook("k", "1700000000", good, body, now=1700000000 + 299)
    assert verify_webhook("k", "1700000000", good, body, now=1700000000 - 299)
    assert not verify_webhook("k", "1700000000", good, body, now=1700000000 - 301)
    for timestamp, signature in [
        (None, good),
        ("1700000000", None),
        ("", good),
        ("not-a-time", good),
        ("+1700000000", good),
        ("1700000000", good.upper()),
        ("1700000000", "sha256=é"),
    ]:
        assert not verify_webhook("k", timestamp, signature, body, now=1700000000)
    assert not verify_webhook("", "1700000000", good, body, now=1700000000)


def test_the_snippet_in_the_docs_verifies_a_real_delivery(receiver: Receiver) -> None:
    """docs/notifications.md shows receivers how to check a delivery: that code must work."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/notifications.md has no python snippet"
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)  # noqa: S102 - our own documentation, under test
    verify = namespace["verify"]

    asyncio.run(send_webhook(WebhookNotifier(url=receiver.url(), secret="s3cret"), make_notice()))
    [request] = receiver.requests
    assert verify("s3cret", request.headers, request.body) is True
    assert verify("wrong", request.headers, request.body) is False
    assert verify("s3cret", request.headers, request.body + b" ") is False
    assert verify("s3cret", {}, request.body) is False


@pytest.mark.parametrize(
    ("status", "retry"),
    [(500, True), (503, True), (429, True), (400, False), (404, False), (410, False), (301, False)],
)
def test_failures_say_whether_to_retry(status: int, retry: bool) -> None:
    r = Receiver(scripted((status, "nope: bad thing")))
    try:
        with pytest.raises(NotifyError) as caught:
            asyncio.run(send_webhook(WebhookNotifier(url=r.url("/t0ken")), make_notice()))
    finally:
        r.close()
    assert caught.value.retry is retry
    assert f"HTTP {status}" in str(caught.value)
    assert "nope: bad thing" in str(caught.value)
    assert "t0ken" not in str(caught.value)  # the URL's path may be a credential
    assert len(r.requests) == 1


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_delivered(status: int) -> None:
    r = Receiver(scripted((status, "")))
    try:
        asyncio.run(send_webhook(WebhookNotifier(url=r.url()), make_notice()))
    finally:
        r.close()
    assert len(r.requests) == 1


def test_unreachable_receiver_is_retryable() -> None:
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_webhook(WebhookNotifier(url=unreachable_url()), make_notice()))
    assert caught.value.retry is True
    assert "could not reach webhook at 127.0.0.1" in str(caught.value)


def test_a_url_that_cannot_work_is_not_retried() -> None:
    # The pipeline file refuses such a URL; one from a secret is only known when sending.
    notifier = WebhookNotifier.model_construct(url="ftp://example.com/x")
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_webhook(notifier, make_notice()))
    assert caught.value.retry is False
