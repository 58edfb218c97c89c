"""The HTTP health check: GET a path on the deployment until it answers well enough, often enough.

A fresh deployment typically refuses connections, then answers 503 while it warms up, then 200.
One lucky 200 proves little, so the check wants ``successes`` passing probes in a row, and gives
up after ``within``. Every probe is bounded by ``timeout`` so that a hanging endpoint costs one
probe, not the whole window.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, Field, field_validator

from conveyor.checks.base import CheckContext, CheckResult, Outcome, RepeatedCheck, check
from conveyor.spec.fields import Duration, check_regex, user_error
from conveyor.spec.problems import describe

__all__ = ["EXTENSION", "HttpCheck", "http_check"]


class HttpCheck(RepeatedCheck):
    """Healthy when GET `path` answers `expect` (and `body` matches) `successes` times in a row."""

    path: str = Field("/", description="URL path probed on the deployment.")
    expect: int = Field(200, ge=100, le=599, description="Expected HTTP status code.")
    body: Annotated[str | None, AfterValidator(check_regex)] = Field(
        None, description="Regular expression the response body must match."
    )
    timeout: Duration = Field(5.0, description="Timeout of one probe.")
    latency: Duration | None = Field(
        None, description="Slowest acceptable response; a slower probe fails."
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise user_error("relative_path", f"path {describe(value)} must start with '/'")
        return value

    def explain(self) -> str:
        text = f"GET {self.path} expects {self.expect}"
        if self.body:
            text += f" and body ~ /{self.body}/"
        return f"{text} {self.window()}"


# Enough of a body to match a regular expression against; a health endpoint that sends more is
# not read to the end, so memory stays bounded whatever the deployment answers.
_MAX_BODY = 1024 * 1024
# Measurements kept in ``data``: a long window probed every second would otherwise make a huge
# release record for no reader's benefit.
_KEEP = 100

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def format_seconds(seconds: float) -> str:
    """Durations for people: "30 s", "0.25 s", never "0.30000000000000004 s"."""
    return f"{round(seconds, 2):g} s"


@dataclass
class Streak:
    """The attempts of a RepeatedCheck that passed in a row, and its last failure."""

    check: RepeatedCheck
    count: int = 0
    passed_last: bool = False
    last_failure: str = ""
    failed_in_row: int = 0

    @property
    def done(self) -> bool:
        """Whether as many attempts passed in a row as the check needs."""
        return self.count >= self.check.successes

    @property
    def gave_up(self) -> bool:
        """Whether as many attempts failed in a row as `failures` allows: no need to wait for
        the rest of the window."""
        limit = self.check.failures
        return limit is not None and self.failed_in_row >= limit

    def passed(self) -> bool:
        """Count a passing attempt; whether the streak is long enough now."""
        self.count += 1
        self.passed_last = True
        self.failed_in_row = 0
        return self.done

    def failed(self, failure: str) -> bool:
        """A failing attempt: the streak starts again, and ``failure`` says why. Whether the
        check gives up now (`failures` in a row)."""
        self.count, self.passed_last, self.last_failure = 0, False, failure
        self.failed_in_row += 1
        return self.gave_up

    def failure(self, what: str) -> str:
        """Why the check failed, for its detail; ``what`` names what was tried."""
        if self.gave_up:
            return (
                f"{self.last_failure}; gave up after {self.failed_in_row} failures in a row "
                f"(failures: {self.check.failures})"
            )
        tally = (
            f"{self.count}/{self.check.successes} consecutive successes in "
            f"{format_seconds(self.check.within)}"
        )
        if not self.last_failure:
            return f"{what}: only {tally}"
        if self.passed_last:
            return f"{self.last_failure}, then {tally}"
        return f"{self.last_failure}; {tally}"


def describe_error(exc: BaseException) -> str:
    """The words a person needs for a failed request, found down the exception chain: httpx
    says "All connection attempts failed" where the operating system said "refused"."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[cause.errno]
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class _Probe:
    passed: bool
    failure: str  # empty when passed
    status: int | None
    latency: float | None  # seconds; None when no answer came


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every check: building one (loading the CA bundle) costs 20–35 ms
    of CPU, on the event loop that also runs the environments' proxies."""
    return ssl.create_default_context()


async def _probe(
    client: httpx.AsyncClient,
    check: HttpCheck,
    url: str,
    pattern: re.Pattern[str] | None,
    limit: float | None,
    clock: Callable[[], float],
) -> _Probe:
    what = f"GET {check.path}"
    started = clock()
    try:
        # asyncio's timeout bounds the whole exchange, including a body that trickles in byte
        # by byte, which httpx's per-read timeouts would allow forever.
        async with asyncio.timeout(check.timeout):
            async with client.stream(
                "GET", url, follow_redirects=False, timeout=check.timeout
            ) as response:
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) >= _MAX_BODY:
                        break
                status = response.status_code
                encoding = response.encoding or "utf-8"
    except (TimeoutError, httpx.TimeoutException):
        return _Probe(False, f"{what}: timed out after {format_seconds(check.timeout)}", None, None)
    except httpx.HTTPError as exc:
        return _Probe(False, f"{what}: {describe_error(exc)}", None, None)
    latency = clock() - started
    if status != check.expect:
        return _Probe(False, f"{what} → {status} (expected {check.expect})", status, latency)
    if pattern is not None:
        try:
            body = bytes(raw).decode(encoding, errors="replace")
        except LookupError:  # a charset Python does not know
            body = bytes(raw).decode("utf-8", errors="replace")
        if pattern.search(body) is None:
            failure = f"{what} → {status} but the body does not match {check.body!r}"
            return _Probe(False, failure, status, latency)
    if limit is not None and latency > limit:
        return _Probe(
            False,
            f"{what} → {status} in {latency * 1000:.0f} ms (slower than {limit * 1000:.0f} ms)",
            status,
            latency,
        )
    return _Probe(True, "", status, latency)


async def http_check(
    check: HttpCheck,
    base_url: str,
    *,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Probe ``base_url + check.path`` until ``check.successes`` probes in a row pass (PASS) or
    ``check.within`` runs out or ``check.failures`` probes in a row fail (FAIL, naming the last
    failure). A probe started inside the window
    may finish after it, so the check takes at most about ``within + timeout``.

    An unusable ``base_url`` is INCONCLUSIVE: it says nothing about the deployment's health.
    """
    started = clock()
    url = base_url.rstrip("/") + check.path
    try:
        scheme = httpx.URL(url).scheme
    except httpx.InvalidURL as exc:
        scheme = f"invalid ({exc})"
    if scheme not in ("http", "https"):
        return CheckResult(
            "http",
            Outcome.INCONCLUSIVE,
            f"cannot probe {url!r}: not an http(s) URL",
            duration=clock() - started,
            data={"url": url},
        )
    pattern = re.compile(check.body) if check.body is not None else None
    limit = check.latency
    deadline = started + check.within

    statuses: list[int | None] = []
    latencies: list[float | None] = []
    probes = 0
    streak = Streak(check)

    owned = client is None
    http = client or httpx.AsyncClient(
        follow_redirects=False, timeout=check.timeout, verify=tls_context()
    )
    try:
        while True:
            probe_started = clock()
            probe = await _probe(http, check, url, pattern, limit, clock)
            probes += 1
            statuses.append(probe.status)
            latencies.append(None if probe.latency is None else round(probe.latency * 1000, 1))
            del statuses[:-_KEEP], latencies[:-_KEEP]
            if probe.passed:
                if streak.passed():
                    break
            elif streak.failed(probe.failure):
                break
            # No probe starts after the window: waiting for it would only delay the verdict.
            next_at = probe_started + check.interval
            if next_at >= deadline:
                break
            await asyncio.sleep(max(0.0, next_at - clock()))
    finally:
        if owned:
            await http.aclose()

    data: dict[str, Any] = {
        "url": url,
        "probes": probes,
        "consecutive_successes": streak.count,
        "needed": check.successes,
        "statuses": statuses,
        "latencies_ms": latencies,
    }
    duration = clock() - started
    if streak.done:
        return CheckResult(
            "http",
            Outcome.PASS,
            f"GET {check.path} → {check.expect}, {streak.count}/{check.successes} consecutive "
            f"successes after {probes} probe{'s' if probes != 1 else ''}",
            duration=duration,
            data=data,
        )
    return CheckResult(
        "http", Outcome.FAIL, streak.failure(f"GET {check.path}"), duration=duration, data=data
    )


async def _run(options: HttpCheck, context: CheckContext) -> CheckResult:
    if context.base_url is None:
        return CheckResult("http", Outcome.INCONCLUSIVE, "the target has no URL to probe")
    return await http_check(options, context.base_url)


EXTENSION = check("http", HttpCheck, _run, order=10)
