"""What every check returns: pass, fail or inconclusive, with the evidence a person reads.

Inconclusive is a real outcome, not an error: the Prometheus query had no data, the metrics
server did not answer. It holds the promotion for a person instead of guessing.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import Field

from conveyor.extensions import Extension, Kind, Options
from conveyor.sandbox import Sandbox
from conveyor.spec.durations import format_duration
from conveyor.spec.fields import Duration

__all__ = [
    "CheckContext",
    "CheckOptions",
    "CheckResult",
    "Outcome",
    "RepeatedCheck",
    "check",
    "combine",
]


class Outcome(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``detail`` is one line a person understands ("GET /healthz → 503
    after 30 s, 0/3 consecutive successes"); ``data`` holds the measurements (statuses,
    latencies, values) for the release record."""

    kind: str
    outcome: Outcome
    detail: str
    duration: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "duration": round(self.duration, 3),
            "data": self.data,
        }


def combine(results: Iterable[CheckResult]) -> Outcome:
    """Fail if any failed; else inconclusive if any was; else pass (also for no checks)."""
    outcomes = {r.outcome for r in results}
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.INCONCLUSIVE in outcomes:
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


@dataclass(frozen=True)
class CheckContext:
    """What a check may use about the deployment it judges: where it serves (None: the target
    has no URL), the environment's variables (the whole environment of a command it runs), the
    release folder, the server's Prometheus, and the sandbox for commands from the file."""

    base_url: str | None
    env: Mapping[str, str]
    cwd: Path
    prometheus_url: str | None = None
    sandbox: Sandbox | None = None


class CheckOptions(Options):
    """Base of a check's options (the mapping under its key in `health:` or `monitor:`)."""

    #: Whether the check says something about a release put back by a rollback (a check of
    #: recent traffic would still judge the release being undone).
    judges_rollback: ClassVar[bool] = True

    def for_monitoring(self, interval: float) -> Self | None:
        """This check as one quick look, for watching the serving release every ``interval``
        when `monitor:` names no checks; None if it does not suit watching."""
        return None


class RepeatedCheck(CheckOptions):
    """A check tried every `interval` until it passes `successes` times in a row, or `within`
    runs out, or (with `failures`) fails that many times in a row (http, command, tcp)."""

    within: Duration = Field(30.0, description="Give up (unhealthy) after this long.")
    interval: Duration = Field(1.0, description="Time between attempts.")
    successes: int = Field(1, ge=1, description="Consecutive passing attempts needed.")
    failures: int | None = Field(
        None,
        ge=1,
        description="Fail fast: unhealthy after this many failed attempts in a row, without "
        "waiting for `within`. Default: keep trying until `within` runs out.",
    )

    def window(self) -> str:
        """How long the check may take, for `conveyor explain`: "within 30 s"."""
        text = f"within {format_duration(self.within)}"
        if self.failures is not None:
            text += f", failing after {self.failures} failures in a row"
        return text

    def for_monitoring(self, interval: float) -> Self:
        """One attempt, no longer than the monitor's interval."""
        return self.model_copy(update={"successes": 1, "within": min(self.within, interval)})


Run = Callable[[Any, CheckContext], Awaitable[CheckResult]]


def check(
    name: str, options: type[CheckOptions], run: Run, summary: str = "", *, order: int = 100
) -> Extension:
    """The registry entry of a check: ``run(options, context)`` returns its verdict."""
    return Extension(Kind.CHECK, name, options, run, summary, order=order)
