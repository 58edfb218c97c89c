"""What every check returns: pass, fail or inconclusive, with the evidence a person reads.

Inconclusive is a real outcome, not an error: the Prometheus query had no data, the metrics
server did not answer. It holds the promotion for a person instead of guessing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "Outcome", "combine"]


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
