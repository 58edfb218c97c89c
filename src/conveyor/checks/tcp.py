"""The TCP check: the deployment accepts connections on a port (a database, a queue, a service
that speaks no HTTP).

Like the HTTP check it wants ``successes`` connections in a row within ``within``, each bounded
by ``timeout``. Connecting is all it does: nothing is sent, and the connection is closed at once.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from pydantic import Field

from conveyor.checks.base import CheckContext, CheckResult, Outcome, RepeatedCheck, check
from conveyor.checks.http import Streak, describe_error, format_seconds
from conveyor.spec.fields import Duration

__all__ = ["EXTENSION", "TcpCheck", "tcp_check"]


class TcpCheck(RepeatedCheck):
    """Healthy when a TCP connection to `host`:`port` succeeds `successes` times in a row."""

    host: str | None = Field(
        None, min_length=1, description="Host to connect to; default: the deployment URL's host."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Port to connect to; default: the deployment URL's port."
    )
    timeout: Duration = Field(5.0, description="Timeout of one attempt.")

    def explain(self) -> str:
        where = f"{self.host or '<deployment>'}:{self.port or '<deployment port>'}"
        return f"connect to {where} {self.window()}"


def _address(options: TcpCheck, base_url: str | None) -> tuple[str, int] | None:
    url = urlsplit(base_url or "")
    try:
        default_port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:  # a port that is not a number
        default_port = None
    host, port = options.host or url.hostname, options.port or default_port
    return (host, port) if host and port else None


async def tcp_check(options: TcpCheck, host: str, port: int) -> CheckResult:
    """Connect every ``interval`` until ``successes`` connections in a row succeed (PASS) or
    ``within`` runs out or ``failures`` attempts in a row fail (FAIL, naming the last error)."""
    started = time.monotonic()
    deadline = started + options.within
    attempts = 0
    streak = Streak(options)
    while True:
        attempt_started = time.monotonic()
        attempts += 1
        try:
            async with asyncio.timeout(options.timeout):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
        except TimeoutError:
            if streak.failed(f"timed out after {format_seconds(options.timeout)}"):
                break
        except OSError as exc:
            if streak.failed(describe_error(exc)):
                break
        else:
            if streak.passed():
                break
        next_at = attempt_started + options.interval
        if next_at >= deadline:
            break
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    count = streak.count
    data = {"host": host, "port": port, "attempts": attempts, "consecutive_successes": count}
    duration = time.monotonic() - started
    tally = f"{count}/{options.successes} consecutive connections"
    if streak.done:
        return CheckResult(
            "tcp",
            Outcome.PASS,
            f"{host}:{port} accepts connections, {tally}",
            duration=duration,
            data=data,
        )
    if streak.gave_up:
        detail = f"{host}:{port}: {streak.failure('connect')}"
    else:
        tally += f" in {format_seconds(options.within)}"
        detail = f"{host}:{port}: {streak.last_failure or 'no connection'}; {tally}"
    return CheckResult("tcp", Outcome.FAIL, detail, duration=duration, data=data)


async def _run(options: TcpCheck, context: CheckContext) -> CheckResult:
    address = _address(options, context.base_url)
    if address is None:
        return CheckResult(
            "tcp", Outcome.INCONCLUSIVE, "no host and port to connect to: give host and port"
        )
    return await tcp_check(options, *address)


EXTENSION = check("tcp", TcpCheck, _run, order=40)
