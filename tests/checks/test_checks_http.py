"""http_check against real HTTP servers on 127.0.0.1 whose answers each test scripts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from conveyor.checks.base import Outcome
from conveyor.checks.http import HttpCheck, http_check
from tests.prometheus import Reply, StubServer, replies
from tests.serverproc import free_port

OK = Reply(200, "ok\n")


def check(**fields: Any) -> HttpCheck:
    """Fast defaults: probes every 0.05 s, a 2 s window, a 1 s probe timeout."""
    values: dict[str, Any] = {
        "path": "/healthz",
        "interval": 0.05,
        "within": 2,
        "timeout": 1,
        **fields,
    }
    return HttpCheck.model_validate(values)


def test_passes_after_consecutive_successes_following_failures() -> None:
    sequence = replies(Reply(503, "warming up"), Reply(503, "warming up"), OK)
    with StubServer(sequence) as server:
        result = asyncio.run(http_check(check(successes=3), server.url))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.kind == "http"
    assert result.data["statuses"] == [503, 503, 200, 200, 200]
    assert result.data["probes"] == 5
    assert len(result.data["latencies_ms"]) == 5
    assert server.requests == ["/healthz"] * 5
    assert "3/3 consecutive successes" in result.detail


def test_a_failure_resets_the_streak() -> None:
    sequence = replies(OK, Reply(500), OK, OK)
    with StubServer(sequence) as server:
        result = asyncio.run(http_check(check(successes=2), server.url))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.data["statuses"] == [200, 500, 200, 200]


def test_wrong_status_fails_within_the_window_naming_the_last_answer() -> None:
    with StubServer(replies(Reply(503, "down"))) as server:
        started = time.monotonic()
        result = asyncio.run(http_check(check(within=0.5, successes=3), server.url + "/"))
        took = time.monotonic() - started
    assert result.outcome is Outcome.FAIL
    assert result.detail == (
        "GET /healthz → 503 (expected 200); 0/3 consecutive successes in 0.5 s"
    )
    assert took < 0.5 + 2  # stops at the end of the window, not much later
    assert set(result.data["statuses"]) == {503}
    assert result.data["probes"] >= 2


def test_expected_status_other_than_200() -> None:
    with StubServer(replies(Reply(204))) as server:
        result = asyncio.run(http_check(check(expect=204), server.url))
    assert result.outcome is Outcome.PASS, result.detail


def test_redirects_are_not_followed() -> None:
    with StubServer(replies(Reply(302))) as server:
        result = asyncio.run(http_check(check(within=0.3), server.url))
    assert result.outcome is Outcome.FAIL
    assert "→ 302 (expected 200)" in result.detail


def test_body_must_match_the_regex() -> None:
    with StubServer(replies(Reply(200, '{"status": "starting"}'))) as server:
        result = asyncio.run(http_check(check(within=0.3, body=r'"status":\s*"ok"'), server.url))
    assert result.outcome is Outcome.FAIL
    assert "→ 200 but the body does not match" in result.detail
    assert '"status"' in result.detail

    with StubServer(replies(Reply(200, '{"status": "ok"}'))) as server:
        result = asyncio.run(http_check(check(body=r'"status":\s*"ok"'), server.url))
    assert result.outcome is Outcome.PASS, result.detail


def test_slower_than_the_latency_limit_fails() -> None:
    with StubServer(replies(Reply(200, "ok", delay=0.3))) as server:
        result = asyncio.run(http_check(check(within=0.5, latency=0.1), server.url))
    assert result.outcome is Outcome.FAIL
    assert "(slower than 100 ms)" in result.detail
    assert all(ms >= 300 for ms in result.data["latencies_ms"])

    with StubServer(replies(Reply(200, "ok", delay=0.05))) as server:
        result = asyncio.run(http_check(check(latency=2), server.url))
    assert result.outcome is Outcome.PASS, result.detail


def test_hanging_endpoint_fails_on_the_probe_timeout() -> None:
    with StubServer(replies(Reply(hang=True))) as server:
        started = time.monotonic()
        result = asyncio.run(http_check(check(within=0.5, timeout=0.3), server.url))
        took = time.monotonic() - started
    assert result.outcome is Outcome.FAIL
    assert result.detail.startswith("GET /healthz: timed out after 0.3 s; 0/1")
    assert took < 0.5 + 0.3 + 2  # within + timeout, with room for a slow machine
    assert result.data["statuses"][0] is None


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = asyncio.run(http_check(check(within=0.3), url))
    assert result.outcome is Outcome.FAIL
    assert result.detail == "GET /healthz: connection refused; 0/1 consecutive successes in 0.3 s"


def test_not_an_http_url_is_inconclusive() -> None:
    result = asyncio.run(http_check(check(), "ftp://example.invalid"))
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "not an http(s) URL" in result.detail


def test_last_failure_is_named_when_the_window_ends_mid_streak() -> None:
    sequence = replies(Reply(500), OK)
    with StubServer(sequence) as server:
        result = asyncio.run(http_check(check(within=1, interval=0.1, successes=50), server.url))
    assert result.outcome is Outcome.FAIL
    assert result.detail.startswith("GET /healthz → 500 (expected 200), then ")
    assert "/50 consecutive successes in 1 s" in result.detail


def test_uses_the_given_client_without_closing_it() -> None:
    async def probe() -> tuple[Outcome, bool]:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            result = await http_check(check(within=0.3), server.url, client=client)
            return result.outcome, client.is_closed

    with StubServer(replies(Reply(301))) as server:
        outcome, closed = asyncio.run(probe())
    assert outcome is Outcome.FAIL  # a client that follows redirects still does not, here
    assert not closed


def test_cancel_propagates_promptly() -> None:
    async def cancel_mid_probe() -> None:
        task = asyncio.create_task(http_check(check(within=60, timeout=30), server.url))
        await asyncio.to_thread(server.seen.wait, 10)
        task.cancel()
        await asyncio.wait_for(task, 5)

    with StubServer(replies(Reply(hang=True))) as server, pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_mid_probe())
