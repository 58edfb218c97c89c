"""`deliver`: retries with backoff against real receivers, a report instead of an exception,
and cancellation that still works in the middle of a backoff. Sleeping is injected and
recorded, so the tests check the delays without waiting them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.notify.send import DeliveryReport, backoff_delay, deliver, wants
from conveyor.spec.models import Notifier
from tests.notify.test_notify_slack import slack_like
from tests.notify.test_notify_webhook import (
    Receiver,
    make_notice,
    scripted,
    unreachable_url,
)
from tests.serverproc import free_port


class Sleeps:
    """A `sleep` that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def webhook(url: str, **extra: Any) -> Notifier:
    return Notifier.model_validate({"webhook": {"url": url}, **extra})


def receiver(*answers: tuple[int, str]) -> Iterator[Receiver]:
    r = Receiver(scripted(*answers))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def flaky() -> Iterator[Receiver]:
    yield from receiver((500, "try later"), (200, "ok"))


@pytest.fixture
def refusing() -> Iterator[Receiver]:
    yield from receiver((400, "bad request: no such hook"))


def test_wants() -> None:
    notifier = webhook("https://example.com", on=["deployment.failed", "approval.requested"])
    assert wants(notifier, "deployment.failed")
    assert not wants(notifier, "deployment.succeeded")
    default = webhook("https://example.com")
    assert wants(default, "run.failed")
    assert not wants(default, "run.succeeded")


def test_a_server_error_then_success_is_delivered_on_attempt_two(
    flaky: Receiver, sleeps: Sleeps
) -> None:
    report = asyncio.run(deliver(webhook(flaky.url()), make_notice(), sleep=sleeps))
    assert report == DeliveryReport(ok=True, attempts=2, error=None)
    assert len(flaky.requests) == 2
    # The same delivery both times (receivers drop duplicates by it).
    assert {r.headers["x-conveyor-delivery"] for r in flaky.requests} == {"17"}
    [delay] = sleeps.delays
    assert 0.45 <= delay <= 0.5


def test_a_refusal_is_one_attempt_recorded_not_raised(refusing: Receiver, sleeps: Sleeps) -> None:
    report = asyncio.run(deliver(webhook(refusing.url()), make_notice(), sleep=sleeps))
    assert report.ok is False
    assert report.attempts == 1
    assert report.error is not None
    assert "HTTP 400" in report.error
    assert "no such hook" in report.error
    assert len(refusing.requests) == 1
    assert sleeps.delays == []


def test_unreachable_uses_every_attempt_with_growing_capped_delays(sleeps: Sleeps) -> None:
    report = asyncio.run(
        deliver(
            webhook(unreachable_url()),
            make_notice(),
            attempts=7,
            backoff=0.5,
            max_backoff=4.0,
            sleep=sleeps,
        )
    )
    assert report.ok is False
    assert report.attempts == 7
    assert report.error is not None
    assert "could not reach webhook at 127.0.0.1" in report.error
    # No sleep after the last attempt; 0.5, 1, 2, 4, then the cap; each up to 10% shorter.
    assert len(sleeps.delays) == 6
    for delay, nominal in zip(sleeps.delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert nominal * 0.9 <= delay <= nominal


def test_default_attempts(sleeps: Sleeps) -> None:
    report = asyncio.run(deliver(webhook(unreachable_url()), make_notice(), sleep=sleeps))
    assert report.attempts == 5
    assert len(sleeps.delays) == 4


def test_backoff_delay_jitters_below_the_cap() -> None:
    delays = {backoff_delay(10, 0.5, 30.0) for _ in range(50)}
    assert all(27.0 <= d <= 30.0 for d in delays)
    assert len(delays) > 1  # jittered, so notifiers failing together spread out


def test_slack_through_deliver(sleeps: Sleeps) -> None:
    slack = Receiver(slack_like)
    try:
        notifier = Notifier.model_validate(
            {"slack": {"webhook": slack.url("/services/T/B/x")}, "on": "approval.requested"}
        )
        notice = make_notice(event="approval.requested", approval_id=3, url="/approvals/3")
        report = asyncio.run(
            deliver(notifier, notice, base_url="https://ci.example.com", sleep=sleeps)
        )
    finally:
        slack.close()
    assert report == DeliveryReport(ok=True, attempts=1, error=None)
    [request] = slack.requests
    assert slack_like(request) == (200, "ok")
    assert "https://ci.example.com/approvals/3" in request.body.decode()


def test_a_relative_link_is_made_absolute_for_every_channel(sleeps: Sleeps) -> None:
    r = Receiver()
    try:
        notice = make_notice(url="/deployments/9")
        report = asyncio.run(
            deliver(webhook(r.url()), notice, base_url="https://ci.example.com/", sleep=sleeps)
        )
    finally:
        r.close()
    assert report.ok
    assert json.loads(r.requests[0].body)["url"] == "https://ci.example.com/deployments/9"


def test_smtp_unreachable_is_retried_then_reported(sleeps: Sleeps) -> None:
    notifier = Notifier.model_validate({"email": {"to": "oncall@example.com"}})
    report = asyncio.run(
        deliver(
            notifier,
            make_notice(),
            default_smtp=f"smtp://127.0.0.1:{free_port()}",
            attempts=3,
            sleep=sleeps,
        )
    )
    assert report.ok is False
    assert report.attempts == 3
    assert report.error is not None
    assert "could not reach SMTP server" in report.error
    assert len(sleeps.delays) == 2


def test_email_without_any_smtp_server_is_not_retried(sleeps: Sleeps) -> None:
    notifier = Notifier.model_validate({"email": {"to": "oncall@example.com"}})
    report = asyncio.run(deliver(notifier, make_notice(), sleep=sleeps))
    assert report.ok is False
    assert report.attempts == 1
    assert report.error is not None
    assert "no SMTP server configured" in report.error


def test_an_unexpected_exception_is_reported_not_raised(sleeps: Sleeps) -> None:
    """A notice that cannot be serialised (a caller's bug) must still not escape `deliver`."""
    r = Receiver()
    try:
        notice = make_notice(fields={"oops": object()})
        report = asyncio.run(deliver(webhook(r.url()), notice, sleep=sleeps))
    finally:
        r.close()
    assert report.ok is False
    assert report.attempts == 1
    assert report.error is not None
    assert report.error.startswith("unexpected error: TypeError:")
    assert r.requests == []


def test_cancellation_during_backoff_propagates() -> None:
    """A server shutting down cancels senders; `deliver` must not swallow that."""

    async def scenario() -> None:
        sleeping = asyncio.Event()

        async def sleep_forever(_delay: float) -> None:
            sleeping.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(
            deliver(webhook(unreachable_url()), make_notice(), sleep=sleep_forever)
        )
        await asyncio.wait_for(sleeping.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)

    asyncio.run(scenario())
