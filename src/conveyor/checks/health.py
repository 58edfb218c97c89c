"""A deployment's health checks and verification steps, as the delivery engine runs them.

The checks of one ``health`` block run side by side: each has its own window, and waiting for
them one after another would make a deployment wait for the sum of the windows rather than the
longest. Verification steps run afterwards, in order, because later ones usually build on
earlier ones (smoke test before the full suite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from conveyor.checks.base import CheckContext, CheckResult, Outcome
from conveyor.checks.command import describe_exit, output_tail
from conveyor.errors import ConveyorError
from conveyor.extensions import Kind, registry
from conveyor.proc import run_process
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.spec.models import Health, VerifyStep

__all__ = ["VERIFY_TIMEOUT", "run_health", "run_verify"]

VERIFY_TIMEOUT = 600.0


async def run_health(
    health: Health,
    *,
    base_url: str | None,
    env: Mapping[str, str],
    cwd: Path,
    prometheus_url: str | None,
    sandbox: Sandbox | None = None,
) -> list[CheckResult]:
    """Run every configured check concurrently; results come in the registry's order of the
    checks (whichever are configured), so a record reads the same every time.

    A check that cannot judge from here (an HTTP check against a target without a URL) is
    INCONCLUSIVE rather than failed: the deployment may be fine, we just cannot tell.
    """
    context = CheckContext(base_url, env, cwd, prometheus_url, sandbox)
    checks = registry().of(Kind.CHECK)
    # A TaskGroup cancels the other checks (and so kills their processes) when one raises or
    # the caller is cancelled.
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(checks[name].implementation(options, context))
            for name, options in health.configured().items()
        ]
    return [task.result() for task in tasks]


def _step_name(step: VerifyStep) -> str:
    if step.name:
        return step.name
    first = next((line.strip() for line in step.run.splitlines() if line.strip()), "")
    return first if len(first) <= 60 else first[:59] + "…"


async def run_verify(
    steps: list[VerifyStep],
    *,
    env: Mapping[str, str],
    cwd: Path,
    on_line: Callable[[str], None],
    sandbox: Sandbox | None = None,
) -> CheckResult:
    """Run each step's command with ``bash -c`` in order, streaming its output to ``on_line``;
    stop at the first that does not exit 0 (FAIL, naming it), since later steps assume the
    earlier ones held. A step without a timeout gets VERIFY_TIMEOUT, so that a hung test
    cannot hold the deployment forever. Steps run in ``sandbox`` (default: the server's) with
    ``cwd`` as their only writable folder and ``env`` as their whole environment.
    """
    started = time.monotonic()
    ran: list[dict[str, Any]] = []
    data: dict[str, Any] = {"steps": ran}
    tail: list[str] = []

    def collect(line: str) -> None:
        on_line(line)
        tail.append(line)
        del tail[:-20]

    for index, step in enumerate(steps):
        name = _step_name(step)
        timeout = step.timeout if step.timeout is not None else VERIFY_TIMEOUT
        on_line(f"[conveyor] verify {index + 1}/{len(steps)}: {name}")
        tail.clear()
        try:
            result = await run_process(
                ["bash", "-c", step.run],
                cwd=cwd,
                env=env,
                on_line=collect,
                timeout=timeout,
                sandbox=sandbox if sandbox is not None else default_sandbox(),
            )
        except ConveyorError as exc:
            ran.append({"name": name, "exit_code": None, "error": str(exc)})
            return CheckResult(
                "verify",
                Outcome.INCONCLUSIVE,
                f"verify step {name!r} could not run: {exc}",
                duration=time.monotonic() - started,
                data=data,
            )
        ran.append(
            {"name": name, "exit_code": result.exit_code, "duration": round(result.duration, 3)}
        )
        if not result.ok:
            how = describe_exit(result, timeout)
            on_line(f"[conveyor] verify step {name!r} {how}")
            detail = f"verify step {index + 1}/{len(steps)} {name!r} {how}"
            last = output_tail(tail, 1)
            if last:
                detail += f": {last}"
            data["output_tail"] = tail
            data["skipped"] = [_step_name(s) for s in steps[index + 1 :]]
            return CheckResult(
                "verify", Outcome.FAIL, detail, duration=time.monotonic() - started, data=data
            )
    count = len(steps)
    return CheckResult(
        "verify",
        Outcome.PASS,
        f"{count} verify step{'s' if count != 1 else ''} passed" if count else "no verify steps",
        duration=time.monotonic() - started,
        data=data,
    )
