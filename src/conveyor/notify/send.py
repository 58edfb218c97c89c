"""Delivering one notice to one notifier, with retries, without ever failing the caller.

A notification is a side effect of a deployment, never a part of it: whatever a channel does
(refuses, times out, crashes a parser), `deliver` returns a report the caller records, and the
deployment carries on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from conveyor.extensions import Kind, registry
from conveyor.notify.base import Notice, NotifyContext, NotifyError
from conveyor.notify.slack import absolute_url
from conveyor.spec.models import Notifier

__all__ = ["DeliveryReport", "backoff_delay", "deliver", "wants"]


@dataclass
class DeliveryReport:
    """How a delivery ended: `attempts` made, and the last error when it did not succeed."""

    ok: bool
    attempts: int
    error: str | None


def wants(notifier: Notifier, event: str) -> bool:
    """Whether the notifier subscribed to the event (its `on:` list)."""
    return event in notifier.on


def backoff_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Seconds to wait after failed attempt `attempt` (0-based): doubling, capped, and up to
    10% shorter at random so that notifiers failing together do not retry in lockstep."""
    delay = min(max_backoff, backoff * 2.0**attempt)
    return delay * (1 - 0.1 * random.random())  # noqa: S311 - jitter, not a secret


async def deliver(
    notifier: Notifier,
    notice: Notice,
    *,
    base_url: str | None = None,
    default_smtp: str | None = None,
    default_from: str | None = None,
    attempts: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> DeliveryReport:
    """Try up to `attempts` times while the failure is one that may pass (NotifyError with
    retry=True); stop at the first that will not. Never raises, except CancelledError (a
    shutting-down server must be able to stop a sender in the middle of its backoff).
    An unexpected exception is a bug, not a flaky channel: reported at once, not retried."""
    attempts = max(1, attempts)
    # Every channel gets a link it can use outside Conveyor's own pages.
    link = absolute_url(notice.url, base_url)
    if link != notice.url:
        notice = replace(notice, url=link)
    error: str | None = None
    context = NotifyContext(base_url, default_smtp, default_from)
    send = registry().get(Kind.NOTIFIER, notifier.kind).implementation
    for attempt in range(attempts):
        try:
            await send(notifier.channel, notice, context)
        except NotifyError as exc:
            error = str(exc)
            if not exc.retry:
                return DeliveryReport(ok=False, attempts=attempt + 1, error=error)
        except Exception as exc:
            error = f"unexpected error: {type(exc).__name__}: {exc}"
            return DeliveryReport(ok=False, attempts=attempt + 1, error=error)
        else:
            return DeliveryReport(ok=True, attempts=attempt + 1, error=None)
        if attempt + 1 < attempts:
            await sleep(backoff_delay(attempt, backoff, max_backoff))
    return DeliveryReport(ok=False, attempts=attempts, error=error)
