"""The Prometheus health check: a PromQL number must stay on the right side of a threshold.

A deployment can answer its health endpoint and still serve errors to real users; the error rate
in Prometheus tells. The check samples the query over a window (``for``) and passes only when the
whole window was healthy, failing at the first bad sample so that a rollback starts at once.

Not knowing is not healthy: no data, several series, NaN, or a Prometheus that does not answer
makes the verdict INCONCLUSIVE, which holds the promotion for a person instead of guessing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx
from pydantic import ConfigDict, Field, model_validator

from conveyor import jsonio
from conveyor.checks.base import CheckContext, CheckOptions, CheckResult, Outcome, check
from conveyor.checks.http import describe_error, format_seconds, tls_context
from conveyor.spec.durations import format_duration
from conveyor.spec.fields import Command, Duration, HttpUrl, user_error

__all__ = ["EXTENSION", "PrometheusCheck", "prometheus_check"]


class PrometheusCheck(CheckOptions):
    """Healthy while a PromQL query stays below (or above) a threshold."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["below"]}, {"required": ["above"]}]}
    )
    # Its samples are of recent traffic: after a rollback they still describe the release
    # being undone.
    judges_rollback: ClassVar[bool] = False

    url: HttpUrl | None = Field(None, description="Prometheus base URL; default: the server's.")
    query: Command = Field(description="PromQL expression returning one number.")
    below: float | None = Field(None, description="Healthy while the value is below this.")
    above: float | None = Field(None, description="Healthy while the value is above this.")
    for_: Duration = Field(60.0, alias="for", description="How long the condition must hold.")
    within: Duration | None = Field(None, description="Give up after this long.")

    @model_validator(mode="after")
    def _one_threshold(self) -> Self:
        if (self.below is None) == (self.above is None):
            raise user_error("threshold", "give exactly one of 'below' or 'above'")
        return self

    def explain(self) -> str:
        bound = f"below {self.below:g}" if self.below is not None else f"above {self.above:g}"
        return f"`{self.query.strip()}` {bound} for {format_duration(self.for_)}"


# One query should take milliseconds; a Prometheus that needs longer is in no state to vouch
# for a deployment.
_QUERY_TIMEOUT = 10.0
# An answer this large is a query matching a great many series: read no further.
_MAX_ANSWER = 4 * 1024 * 1024
_KEEP = 100
# Sleeps may end a hair early; a sample this close to the end of the window closes it.
_SLACK = 1e-3


class _Unusable(Exception):
    """The answer cannot be judged (several series, an error, no answer at all)."""


@dataclass(frozen=True)
class _Reading:
    value: float | None  # None: an empty result, no data yet


def _number(text: Any) -> float:
    if not isinstance(text, str):
        raise _Unusable(f"unexpected value {text!r} in Prometheus' answer")
    try:
        return float(text)
    except ValueError:
        raise _Unusable(f"unexpected value {text!r} in Prometheus' answer") from None


def _parse(answer: Any) -> _Reading:
    """Read one number out of a /api/v1/query answer, scalar or single-element vector."""
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        raise _Unusable("the answer is not a Prometheus query result")
    if answer["status"] == "error":
        kind = answer.get("errorType") or "error"
        message = str(answer.get("error") or "no message").splitlines()[0]
        raise _Unusable(f"Prometheus rejected the query ({kind}): {message}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise _Unusable("the answer is not a Prometheus query result")
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _Reading(_number(result[1]))
    if kind == "vector" and isinstance(result, list):
        if not result:
            return _Reading(None)
        if len(result) > 1:
            raise _Unusable(
                f"the query returned {len(result)} series, not one number "
                "(aggregate it, e.g. with sum(), or filter by label)"
            )
        sample = result[0]
        value = sample.get("value") if isinstance(sample, dict) else None
        if not isinstance(value, list) or len(value) != 2:
            raise _Unusable("the answer is not a Prometheus query result")
        return _Reading(_number(value[1]))
    raise _Unusable(f"the query returned a {kind}, not one number")


async def _query(
    client: httpx.AsyncClient, api: str, query: str, timeout: float, waited: str
) -> _Reading:
    where = api.removesuffix("/api/v1/query")
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET", api, params={"query": query}, timeout=timeout
            ) as response:
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > _MAX_ANSWER:
                        raise _Unusable(
                            "Prometheus' answer is too large: the query matches too many series"
                        )
                status = response.status_code
    except (TimeoutError, httpx.TimeoutException):
        raise _Unusable(f"Prometheus at {where} did not answer {waited}") from None
    except httpx.InvalidURL as exc:
        raise _Unusable(f"the Prometheus URL {where!r} is not valid: {exc}") from None
    except httpx.HTTPError as exc:
        raise _Unusable(f"Prometheus at {where} is unreachable: {describe_error(exc)}") from None
    try:
        answer = jsonio.loads(raw)
    except ValueError:
        raise _Unusable(f"{where} answered HTTP {status}, not a Prometheus query result") from None
    return _parse(answer)


def _json_number(value: float | None) -> float | str | None:
    """NaN and infinities as Prometheus spells them: JSON has no such numbers."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


async def prometheus_check(
    check: PrometheusCheck,
    *,
    default_url: str | None,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Sample ``check.query`` every min(1 s, for/5) over ``check.for_``.

    FAIL at the first sample on the wrong side of the threshold; PASS when the window ends with
    every sample on the right side and at least one sample with data (a sample without data, or
    NaN, counts neither way: a rate over a brand-new series is empty at first). Anything that
    cannot be judged, and a ``within`` that runs out first, is INCONCLUSIVE.
    """
    started = clock()
    base = (check.url or default_url or "").rstrip("/")
    below, above = check.below, check.above
    side, limit = ("below", below) if below is not None else ("above", above)
    assert limit is not None, "the spec guarantees one of below/above"
    data: dict[str, Any] = {"url": base or None, "query": check.query, side: limit}

    def verdict(outcome: Outcome, detail: str) -> CheckResult:
        return CheckResult("prometheus", outcome, detail, duration=clock() - started, data=data)

    if not base:
        return verdict(
            Outcome.INCONCLUSIVE,
            "no Prometheus URL: set 'url' on the check or configure the server's Prometheus",
        )

    def healthy(value: float) -> bool:
        return value < limit if below is not None else value > limit

    window = check.for_
    step = min(1.0, window / 5)
    give_up = None if check.within is None else started + check.within
    api = f"{base}/api/v1/query"
    values: list[list[float | str | None]] = []
    samples = with_data = nans = 0
    worst = math.nan
    data.update(samples=0, with_data=0, values=values)

    owned = client is None
    http = client or httpx.AsyncClient(timeout=_QUERY_TIMEOUT, verify=tls_context())
    try:
        while True:
            now = clock()
            at = now - started
            if give_up is not None and now >= give_up:
                return verdict(
                    Outcome.INCONCLUSIVE,
                    f"gave up after {format_seconds(check.within or 0)} with the "
                    f"{format_seconds(window)} window incomplete ({samples} samples)",
                )
            timeout, waited = _QUERY_TIMEOUT, f"within {format_seconds(_QUERY_TIMEOUT)}"
            if give_up is not None and give_up - now < _QUERY_TIMEOUT:
                timeout = give_up - now
                waited = f"before the check's {format_seconds(check.within or 0)} ran out"
            try:
                reading = await _query(http, api, check.query, timeout, waited)
            except _Unusable as exc:
                # Mid-window, when it happened tells a person whether Prometheus went away.
                when = f" (at +{_offset(at)})" if samples else ""
                return verdict(Outcome.INCONCLUSIVE, f"{exc}{when}")
            value = reading.value
            values.append([round(at, 3), _json_number(value)])
            del values[:-_KEEP]
            samples += 1
            data["samples"] = samples
            if value is not None and math.isnan(value):
                nans += 1
            elif value is not None:
                with_data += 1
                data["with_data"] = with_data
                if with_data == 1 or (value > worst if below is not None else value < worst):
                    worst = value
                if not healthy(value):
                    return verdict(
                        Outcome.FAIL, f"value {value:g} not {side} {limit:g} at +{_offset(at)}"
                    )
            if at >= window - _SLACK:
                break
            # Ticks are anchored to the start, so a slow query does not stretch the window.
            next_at = started + (math.floor(at / step + _SLACK) + 1) * step
            if give_up is not None and next_at >= give_up:
                await asyncio.sleep(max(0.0, give_up - clock()))
                continue
            await asyncio.sleep(max(0.0, next_at - clock()))
    finally:
        if owned:
            await http.aclose()

    if with_data == 0:
        over = f"{samples} samples over {format_seconds(window)}"
        if nans == samples:
            return verdict(Outcome.INCONCLUSIVE, f"the value was NaN in all {over}")
        if nans:
            return verdict(Outcome.INCONCLUSIVE, f"the query returned no data or NaN in {over}")
        return verdict(Outcome.INCONCLUSIVE, f"the query returned no data in {over}")
    return verdict(
        Outcome.PASS,
        f"value stayed {side} {limit:g} for {format_seconds(window)} "
        f"({samples} samples, {'highest' if below is not None else 'lowest'} {worst:g})",
    )


def _offset(seconds: float) -> str:
    return f"{round(seconds, 1):g} s"


async def _run(options: PrometheusCheck, context: CheckContext) -> CheckResult:
    return await prometheus_check(options, default_url=context.prometheus_url)


EXTENSION = check("prometheus", PrometheusCheck, _run, order=30)
