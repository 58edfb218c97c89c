"""Builders for the DORA tests: facts with readable times, and the report as JSON.

Every expected value in these tests is worked out by hand in a comment next to it; nothing is
computed by the code under test to check itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.facts import (
    Change,
    DeploymentFact,
    DeploymentKind,
    DeploymentResult,
    IncidentFact,
)
from conveyor.metrics.dora import Settings, Window, compute

UTC = dt.UTC
HOUR = 3600.0
DAY = 86400.0


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2024) -> dt.datetime:
    """An aware UTC time (2024 unless told)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def commit(sha: str, committed: dt.datetime, **times: dt.datetime) -> Change:
    return Change(sha, committed, times.get("authored"), times.get("seen"))


def deployment(
    id_: str,
    finished: dt.datetime,
    *changes: Change,
    started: dt.datetime | None = None,
    kind: DeploymentKind = "deploy",
    result: DeploymentResult = "succeeded",
    service: str = "shop",
    environment: str = "production",
    tier: str = "production",
    failed_at: dt.datetime | None = None,
    rollback_of: str | None = None,
    fixes_incident: bool = False,
    stages: Mapping[str, dt.datetime] | None = None,
) -> DeploymentFact:
    """A deployment that took ten minutes unless ``started`` says otherwise."""
    return DeploymentFact(
        id=id_,
        service=service,
        environment=environment,
        tier=tier,
        kind=kind,
        result=result,
        sha=f"{id_}-sha",
        started_at=started or finished - dt.timedelta(minutes=10),
        finished_at=finished,
        failed_at=failed_at,
        rollback_of=rollback_of,
        fixes_incident=fixes_incident,
        changes=changes,
        stages=dict(stages or {}),
    )


def incident(
    id_: str,
    opened: dt.datetime,
    resolved: dt.datetime | None = None,
    *,
    service: str = "shop",
    environment: str | None = None,
    names: str | None = None,
) -> IncidentFact:
    return IncidentFact(id_, service, opened, resolved, environment, names)


def dora(
    deployments: Iterable[DeploymentFact],
    incidents: Iterable[IncidentFact] = (),
    start: dt.date = dt.date(2024, 1, 1),
    end: dt.date = dt.date(2024, 1, 15),
    *,
    tz: str = "UTC",
    week_start: str = "monday",
    **settings: Any,
) -> dict[str, Any]:
    """The report as JSON; without a previous window unless ``compare=True``, and with the
    explanation (it costs nothing here and the tests read it)."""
    settings.setdefault("compare", False)
    settings.setdefault("explain", True)
    report = compute(
        list(deployments), list(incidents), Window(start, end, tz, week_start), Settings(**settings)
    )
    return report.to_json()


def how(report: dict[str, Any], metric: str) -> dict[str, str]:
    """What --explain says about each item of ``metric``, by id."""
    return {i["id"]: i["how"] for i in report["metrics"][metric]["explanation"]}
