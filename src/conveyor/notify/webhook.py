"""Generic webhooks: a notice as canonical JSON, POSTed and signed with HMAC-SHA256.

The signature covers the timestamp as well as the body so a captured delivery cannot be
replayed later with a fresh timestamp; receivers check both (see docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import httpx
from pydantic import Field

from conveyor.extensions import Options
from conveyor.notify.base import Notice, NotifyContext, NotifyError, notifier
from conveyor.spec.fields import HttpUrl

__all__ = [
    "EXTENSION",
    "USER_AGENT",
    "WebhookNotifier",
    "post",
    "send_webhook",
    "sign_webhook",
    "verify_webhook",
    "webhook_request",
]


class WebhookNotifier(Options):
    """POST a JSON event to a URL."""

    url: HttpUrl = Field(description="Receiver URL.")
    secret: str | None = Field(None, description="HMAC-SHA256 signing secret.")

    def explain(self) -> str:
        return self.url


def _version() -> str:
    try:
        return version("conveyor")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "dev"


USER_AGENT = f"conveyor/{_version()}"
# Enough of an error page to say what went wrong without pasting a whole HTML document.
_BODY_EXCERPT = 200


def _host(url: str) -> str:
    """Only the host goes into error messages: webhook URLs often carry their credential in
    the path (Slack, Teams, Discord) and errors end up in logs and the UI."""
    try:
        return httpx.URL(url).host or "?"
    except (httpx.InvalidURL, TypeError, ValueError):
        return "?"


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    client: httpx.AsyncClient | None = None,
    timeout: float = 10,
) -> httpx.Response:
    """POST once and turn every failure into a NotifyError whose `retry` says whether another
    attempt could help: connection trouble, timeouts, 5xx and 429 may pass; other answers
    (4xx, and redirects, which are not followed because a webhook that moved is a
    configuration to fix) will not."""
    where = f"{what} at {_host(url)}"
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout) as own:
                response = await own.post(url, content=body, headers=headers)
        else:
            response = await client.post(url, content=body, headers=headers, timeout=timeout)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise NotifyError(f"{what} URL is not usable: {exc}", retry=False) from None
    except httpx.TimeoutException:
        raise NotifyError(f"{where} did not answer within {timeout:g}s", retry=True) from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise NotifyError(f"could not reach {where}: {reason}", retry=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    text = " ".join(response.text.split())[:_BODY_EXCERPT]
    message = f"{where} answered HTTP {status}" + (f": {text}" if text else "")
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            message += f" (Retry-After: {retry_after[:20]})"
    raise NotifyError(message, retry=status == 429 or status >= 500)


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Conveyor-Signature-256` value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_webhook(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: int = 300,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent. A bool (not
    reasons) because a receiver should answer every failure the same way."""
    if not secret or not timestamp or not signature:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    sent = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    expected = sign_webhook(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def webhook_request(
    notifier: WebhookNotifier, notice: Notice, *, now: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The exact bytes and headers of one delivery. The body is canonical (sorted keys, no
    spaces) so that what is signed is what a receiver reads, byte for byte."""
    body = json.dumps(notice.as_json(), sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time() if now is None else now))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Conveyor-Event": notice.event,
        "X-Conveyor-Delivery": str(notice.id),
        "X-Conveyor-Timestamp": timestamp,
    }
    if notifier.secret:
        headers["X-Conveyor-Signature-256"] = sign_webhook(notifier.secret, timestamp, body)
    return body, headers


async def send_webhook(
    notifier: WebhookNotifier,
    notice: Notice,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 10,
) -> None:
    """One delivery attempt; raises NotifyError (see `post`) unless the receiver answered 2xx.
    Each attempt is signed afresh, so a retry carries a current timestamp."""
    body, headers = webhook_request(notifier, notice)
    await post(notifier.url, body, headers, what="webhook", client=client, timeout=timeout)


async def _send(options: WebhookNotifier, notice: Notice, context: NotifyContext) -> None:
    await send_webhook(options, notice)


EXTENSION = notifier("webhook", WebhookNotifier, _send, order=20)
