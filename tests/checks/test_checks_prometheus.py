"""prometheus_check against a real Prometheus scraping values the test sets (integration), and
against stub servers for answers a healthy Prometheus never gives (errors, junk, silence)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.checks.base import CheckResult, Outcome
from conveyor.checks.health import run_health
from conveyor.checks.prometheus import PrometheusCheck, prometheus_check
from conveyor.spec.models import Health
from tests.prometheus import (  # noqa: F401
    Prometheus,
    Reply,
    StubServer,
    prometheus_session,
    replies,
)
from tests.serverproc import free_port


def check(query: str, **fields: Any) -> PrometheusCheck:
    values: dict[str, Any] = {"query": query, "for": 1, **fields}
    if "below" not in values and "above" not in values:
        values["below"] = 0.01
    return PrometheusCheck.model_validate(values)


def run(
    spec: PrometheusCheck, url: str | None, client: httpx.AsyncClient | None = None
) -> CheckResult:
    return asyncio.run(prometheus_check(spec, default_url=url, client=client))


def api_answer(payload: dict[str, Any], status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload), "application/json")


# --- without Prometheus -----------------------------------------------------------------------


def test_unreachable_prometheus_is_inconclusive() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(check("up"), url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.kind == "prometheus"
    assert result.detail == f"Prometheus at {url} is unreachable: connection refused"


def test_no_url_is_inconclusive() -> None:
    result = run(check("up"), None)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail.startswith("no Prometheus URL")


def test_the_checks_own_url_wins_over_the_default() -> None:
    scalar = api_answer({"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}})
    with StubServer(replies(scalar)) as server:
        result = run(check("x", url=server.url + "/", **{"for": 0.2}), "http://127.0.0.1:1")
    assert result.outcome is Outcome.PASS, result.detail
    assert server.requests[0].startswith("/api/v1/query?query=x")


def test_an_error_answer_is_inconclusive() -> None:
    error = {"status": "error", "errorType": "bad_data", "error": "1:6: parse error"}
    with StubServer(replies(api_answer(error, 400))) as server:
        result = run(check("rate("), server.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail == "Prometheus rejected the query (bad_data): 1:6: parse error"


def test_prometheus_going_away_mid_window_is_inconclusive() -> None:
    scalar = api_answer({"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}})
    unavailable = Reply(503, "Service Unavailable")
    with StubServer(replies(scalar, unavailable)) as server:
        result = run(check("x", **{"for": 5}), server.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert re.fullmatch(
        rf"{server.url} answered HTTP 503, not a Prometheus query result \(at \+[\d.]+ s\)",
        result.detail,
    ), result.detail
    assert result.data["samples"] == 1


def test_an_answer_that_is_not_prometheus_is_inconclusive() -> None:
    with StubServer(replies(Reply(200, "<html>login</html>", "text/html"))) as server:
        result = run(check("up"), server.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "answered HTTP 200, not a Prometheus query result" in result.detail


def test_within_bounds_a_prometheus_that_does_not_answer() -> None:
    with StubServer(replies(Reply(hang=True))) as server:
        result = run(check("up", within=0.3, **{"for": 30}), server.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail == (
        f"Prometheus at {server.url} did not answer before the check's 0.3 s ran out"
    )


def test_within_shorter_than_the_window_is_inconclusive() -> None:
    scalar = api_answer({"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}})
    with StubServer(replies(scalar)) as server:
        result = run(check("x", within=0.3, **{"for": 5}), server.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail.startswith("gave up after 0.3 s with the 5 s window incomplete")


# --- against a real Prometheus ----------------------------------------------------------------


@pytest.mark.integration
def test_value_below_threshold_over_the_window_passes(prometheus: Prometheus) -> None:
    prometheus.exporter.set("conveyor_test_pass_error_ratio", 0.002)
    prometheus.wait_value("conveyor_test_pass_error_ratio", 0.002)
    result = run(check("conveyor_test_pass_error_ratio", below=0.01), prometheus.url)
    assert result.outcome is Outcome.PASS, result.detail
    # Sampled every min(1 s, for/5) from +0 to +1 s: 6 samples, fewer if a query is slow.
    assert re.fullmatch(
        r"value stayed below 0\.01 for 1 s \([2-6] samples, highest 0\.002\)", result.detail
    ), result.detail
    assert result.data["with_data"] == result.data["samples"]
    assert {v for _, v in result.data["values"]} == {0.002}


@pytest.mark.integration
def test_value_crossing_the_threshold_during_the_window_fails(prometheus: Prometheus) -> None:
    name = "conveyor_test_fail_error_ratio"
    prometheus.exporter.set(name, 0.1)
    prometheus.wait_value(name, 0.1)

    async def cross_after_first_sample() -> CheckResult:
        first = asyncio.Event()

        async def on_response(response: httpx.Response) -> None:
            first.set()

        async with httpx.AsyncClient(event_hooks={"response": [on_response]}) as client:
            spec = check(name, below=0.5, **{"for": 30})
            task = asyncio.create_task(
                prometheus_check(spec, default_url=prometheus.url, client=client)
            )
            await asyncio.wait_for(first.wait(), 10)
            prometheus.exporter.set(name, 0.9)  # seen at Prometheus' next scrape, within 1 s
            return await asyncio.wait_for(task, 20)

    result = asyncio.run(cross_after_first_sample())
    assert result.outcome is Outcome.FAIL, result.detail
    assert re.fullmatch(r"value 0\.9 not below 0\.5 at \+[\d.]+ s", result.detail), result.detail
    values = [v for _, v in result.data["values"]]
    assert values[0] == 0.1
    assert values[-1] == 0.9


@pytest.mark.integration
def test_above_threshold(prometheus: Prometheus) -> None:
    prometheus.exporter.set("conveyor_test_ready_replicas", 3)
    prometheus.wait_value("conveyor_test_ready_replicas", 3)
    result = run(check("conveyor_test_ready_replicas", above=2, **{"for": 0.5}), prometheus.url)
    assert result.outcome is Outcome.PASS, result.detail
    assert "lowest 3" in result.detail

    result = run(check("conveyor_test_ready_replicas", above=5, **{"for": 0.5}), prometheus.url)
    assert result.outcome is Outcome.FAIL
    assert re.fullmatch(r"value 3 not above 5 at \+[\d.]+ s", result.detail), result.detail


@pytest.mark.integration
def test_scalar_and_vector_results_are_both_numbers(prometheus: Prometheus) -> None:
    scalar = run(check("0.002", below=0.01, **{"for": 0.2}), prometheus.url)
    assert scalar.outcome is Outcome.PASS, scalar.detail
    vector = run(check("vector(7)", above=1, **{"for": 0.2}), prometheus.url)
    assert vector.outcome is Outcome.PASS, vector.detail


@pytest.mark.integration
def test_query_without_data_is_inconclusive(prometheus: Prometheus) -> None:
    result = run(check("conveyor_test_never_exported", **{"for": 0.5}), prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert re.fullmatch(r"the query returned no data in [2-6] samples over 0\.5 s", result.detail)
    assert result.data["with_data"] == 0


@pytest.mark.integration
def test_several_series_are_inconclusive(prometheus: Prometheus) -> None:
    name = "conveyor_test_http_errors"
    prometheus.exporter.set(name, 0.001, instance="a")
    prometheus.exporter.set(name, 0.002, instance="b")
    prometheus.wait_series(name, 2)
    result = run(check(name), prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail.startswith("the query returned 2 series, not one number")

    summed = run(check(f"sum({name})"), prometheus.url)
    assert summed.outcome is Outcome.PASS, summed.detail


@pytest.mark.integration
def test_nan_is_inconclusive(prometheus: Prometheus) -> None:
    prometheus.exporter.set("conveyor_test_nan_ratio", float("nan"))
    prometheus.wait_value("conveyor_test_nan_ratio", float("nan"))
    result = run(check("conveyor_test_nan_ratio", **{"for": 0.5}), prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert re.fullmatch(r"the value was NaN in all [2-6] samples over 0\.5 s", result.detail)
    assert {v for _, v in result.data["values"]} == {"NaN"}


@pytest.mark.integration
def test_query_rejected_by_prometheus_is_inconclusive(prometheus: Prometheus) -> None:
    result = run(check("rate("), prometheus.url)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail.startswith("Prometheus rejected the query (bad_data): ")


@pytest.mark.integration
def test_run_health_uses_the_servers_prometheus(prometheus: Prometheus, tmp_path: Path) -> None:
    prometheus.exporter.set("conveyor_test_health_latency", 0.2)
    prometheus.wait_value("conveyor_test_health_latency", 0.2)
    health = Health.model_validate(
        {
            "command": {"run": "true", "interval": 0.05},
            "prometheus": {"query": "conveyor_test_health_latency", "below": 0.5, "for": 1},
        }
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    results = asyncio.run(
        run_health(health, base_url=None, env=env, cwd=tmp_path, prometheus_url=prometheus.url)
    )
    assert [(r.kind, r.outcome) for r in results] == [
        ("command", Outcome.PASS),
        ("prometheus", Outcome.PASS),
    ], results
