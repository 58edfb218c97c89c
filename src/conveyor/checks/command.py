"""The command health check: a script of the user's own decides whether the deployment is healthy.

It is the escape hatch for anything an HTTP probe cannot express (a queue drained, a migration
applied). Like the HTTP check it wants ``successes`` passing runs in a row within ``within``; a
run never outlives the window, so a hanging script cannot hold the deployment forever.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from conveyor.checks.base import CheckContext, CheckResult, Outcome, RepeatedCheck, check
from conveyor.checks.http import Streak, format_seconds
from conveyor.errors import ConveyorError
from conveyor.proc import ProcessResult, run_process
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.spec.fields import Command

__all__ = ["EXTENSION", "CommandCheck", "command_check", "describe_exit", "output_tail"]


class CommandCheck(RepeatedCheck):
    """Healthy when the command exits 0 `successes` times in a row."""

    run: Command = Field(description="Command to run; exit status 0 means healthy.")

    def explain(self) -> str:
        return f"`{self.run.strip()}` {self.window()}"


# A health script's output matters for its last few lines ("connection refused", "0 replicas
# ready"); memory stays bounded however much it prints.
_TAIL_LINES = 20
_MAX_OUTPUT = 1024 * 1024
_KEEP = 100
_DETAIL_CHARS = 200


def describe_exit(result: ProcessResult, timeout: float | None) -> str:
    """How a run ended, in words: "exited 1", "killed by signal 9", "timed out after 30 s"."""
    if result.timed_out:
        return "timed out" if timeout is None else f"timed out after {format_seconds(timeout)}"
    if result.cancelled:
        return "was cancelled"
    code = result.exit_code
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exited {code}"


def output_tail(lines: deque[str] | list[str], count: int = 3) -> str:
    """The last non-empty lines as one line, short enough for a ``detail``."""
    tail = [line.strip() for line in lines if line.strip()][-count:]
    text = " | ".join(tail)
    return text if len(text) <= _DETAIL_CHARS else "…" + text[-(_DETAIL_CHARS - 1) :]


async def command_check(
    check: CommandCheck,
    *,
    env: Mapping[str, str],
    cwd: Path,
    sandbox: Sandbox | None = None,
) -> CheckResult:
    """Run ``bash -c check.run`` every ``interval`` until ``successes`` runs in a row exit 0
    (PASS) or ``within`` runs out or ``failures`` runs in a row fail (FAIL, with the last failing
    run's output tail).

    The command comes from the user's own repository, which is why it runs through a shell at
    all, and in ``sandbox`` (default: the server's) with ``cwd`` as its only writable folder
    and ``env`` as its whole environment. When it cannot be started (no bash, no working
    directory, no sandbox) the verdict is INCONCLUSIVE: that says nothing about the deployment.
    """
    started = time.monotonic()
    deadline = started + check.within
    runs = 0
    streak = Streak(check)
    exit_codes: list[int | None] = []
    last_output = ""

    while True:
        run_started = time.monotonic()
        remaining = deadline - run_started
        if remaining <= 0:
            break
        lines: deque[str] = deque(maxlen=_TAIL_LINES)
        try:
            result = await run_process(
                ["bash", "-c", check.run],
                cwd=cwd,
                env=env,
                on_line=lines.append,
                timeout=remaining,
                max_bytes=_MAX_OUTPUT,
                sandbox=sandbox if sandbox is not None else default_sandbox(),
            )
        except ConveyorError as exc:
            return CheckResult(
                "command",
                Outcome.INCONCLUSIVE,
                f"cannot run the check command: {exc}",
                duration=time.monotonic() - started,
                data={"runs": runs, "exit_codes": exit_codes},
            )
        runs += 1
        exit_codes.append(result.exit_code)
        del exit_codes[:-_KEEP]
        if result.ok:
            if streak.passed():
                break
        else:
            last_output = output_tail(lines)
            if result.timed_out:
                failure = f"command still running after {format_seconds(check.within)}"
            else:
                failure = f"command {describe_exit(result, None)}"
            if streak.failed(failure):
                break
        next_at = run_started + check.interval
        if next_at >= deadline:
            break
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    data: dict[str, Any] = {
        "runs": runs,
        "consecutive_successes": streak.count,
        "needed": check.successes,
        "exit_codes": exit_codes,
    }
    duration = time.monotonic() - started
    if streak.done:
        return CheckResult(
            "command",
            Outcome.PASS,
            f"command exited 0, {streak.count}/{check.successes} consecutive successes "
            f"after {runs} run{'s' if runs != 1 else ''}",
            duration=duration,
            data=data,
        )
    data["output_tail"] = last_output
    detail = streak.failure("command")
    if last_output:
        detail += f": {last_output}"
    return CheckResult("command", Outcome.FAIL, detail, duration=duration, data=data)


async def _run(options: CommandCheck, context: CheckContext) -> CheckResult:
    return await command_check(options, env=context.env, cwd=context.cwd, sandbox=context.sandbox)


EXTENSION = check("command", CommandCheck, _run, order=20)
