"""A DORA report: its figures (value, unit, sample size, tier, trend, and what is behind
each), the series by day, week or month, and how both are added up from the engine's per-day
tallies. Percentiles are defined here, once.

Lead times, batch sizes and recovery times are added up as numpy float64 arrays: a report over a
million deployments merges millions of them, and the medians must stay exact."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from conveyor.metrics import tiers as tier_tables
from conveyor.metrics.dora_options import By, Settings, Window

MONTH_DAYS = 365.2425 / 12
# The value-stream stages a lead time is split into.
SPLIT = ("waiting", "ci", "staging", "approval", "production", "unsplit")
Values = npt.NDArray[np.float64]
EMPTY: Values = np.zeros(0)


def median(values: Sequence[float] | Values) -> float | None:
    """The middle of ``values`` (the mean of the two middle ones for an even count); a list
    must be sorted, an array need not be."""
    n = len(values)
    if not n:
        return None
    mid = n // 2
    ranks = [mid] if n % 2 else [mid - 1, mid]
    found = _at(values, ranks)
    return found[0] if n % 2 else (found[0] + found[1]) / 2


def p90(values: Sequence[float] | Values) -> float | None:
    """Nearest rank: the value at rank ceil(0.9 n) of ``values`` (sorted, if a list), so at
    least 90 % of the values are at or below it and it is always one of them (the maximum
    below 10 values)."""
    n = len(values)
    return _at(values, [(90 * n + 99) // 100 - 1])[0] if n else None


def _at(values: Sequence[float] | Values, ranks: list[int]) -> list[float]:
    """The values at ``ranks`` of the sorted order: an array is partitioned around them (linear
    time; millions of lead times are never sorted whole)."""
    if isinstance(values, np.ndarray):
        values = np.partition(values, ranks)
    return [float(values[r]) for r in ranks]


@dataclass
class Figure:
    """One metric: value, unit, sample size, tier, what is behind it (``items``, kept with
    ``explain``) and its value over the previous window of the same length."""

    title: str
    value: float | None
    unit: str
    sample_size: int
    definition: str
    tier: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    previous: float | None = None
    lower_is_better: bool = True

    def trend(self) -> str | None:
        if self.value is None or self.previous is None:
            return None
        if math.isclose(self.value, self.previous, rel_tol=1e-9, abs_tol=1e-9):
            return "flat"
        return "up" if self.value > self.previous else "down"

    def to_json(self, explain: bool) -> dict[str, Any]:
        trend = self.trend()
        data: dict[str, Any] = {
            "title": self.title,
            "value": rounded(self.value),
            "unit": self.unit,
            "sample_size": self.sample_size,
            "tier": self.tier,
            "previous": rounded(self.previous),
            "trend": trend,
            "better": None
            if trend in (None, "flat")
            else (trend == "down") == self.lower_is_better,
            "definition": self.definition,
        }
        if explain:
            data["explanation"] = self.items
        # The metric's own details come last, as the API's model of a figure gives them.
        data.update({k: rounded(v) if isinstance(v, float) else v for k, v in self.detail.items()})
        return data


@dataclass
class DoraReport:
    window: Window
    settings: Settings
    tiers: tier_tables.TierTable
    figures: dict[str, Figure]
    series: list[dict[str, Any]]
    services: list[str]
    environments: list[str]

    def to_json(self) -> dict[str, Any]:
        """The report as `conveyor dora --json` prints it and GET /api/v1/dora returns it."""
        s, w = self.settings, self.window
        return {
            "window": w.to_json(),
            "previous_window": w.previous().to_json() if s.compare else None,
            "scope": {
                "service": s.service,
                "env_tier": s.tier,
                "services": self.services,
                "environments": self.environments,
            },
            "settings": {
                "by": s.by,
                "lead_time_from": s.lead_time_from,
                "look_back_days": s.look_back.total_seconds() / 86400,
                "attribution_window_hours": s.attribution_window.total_seconds() / 3600,
                "percentiles": "median: the middle value (mean of the two middle ones); "
                "p90: nearest rank, the value at rank ceil(0.9 n)",
            },
            "tiers": self.tiers.describe(),
            "metrics": {k: f.to_json(s.explain) for k, f in self.figures.items()},
            "series": self.series,
        }


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class Tally:
    """Per-day tallies over the span (the previous window's days, then the window's): counts,
    the values behind the percentiles (lists from the engine, arrays from the summary), the
    value-stream stage sums (in SPLIT order) and the environments deployed to."""

    def __init__(self, n: int) -> None:
        self.deploys = [0] * n
        self.cfr_total = [0] * n
        self.cfr_failed = [0] * n
        self.rework_total = [0] * n
        self.rework_unplanned = [0] * n
        self.unrestored = [0] * n
        self.caught = [0] * n
        self.incident_unrestored = [0] * n
        # Lists the engine appends to, or arrays from the summary.
        self.leads: list[Any] = [[] for _ in range(n)]
        self.batches: list[Any] = [[] for _ in range(n)]
        self.recoveries: list[Any] = [[] for _ in range(n)]
        self.incident_recoveries: list[Any] = [[] for _ in range(n)]
        self.stages = [[0.0] * len(SPLIT) for _ in range(n)]
        self.envs: list[set[str]] = [set() for _ in range(n)]
        self.services: list[set[str]] = [set() for _ in range(n)]

    def stage_sums(self, days: range) -> dict[str, float]:
        return {name: sum(self.stages[d][i] for d in days) for i, name in enumerate(SPLIT)}


# --- figures ----------------------------------------------------------------------------------

TITLES = {
    "deployment_frequency": "deployment frequency",
    "lead_time": "lead time for changes",
    "change_failure_rate": "change failure rate",
    "recovery_time": "failed deployment recovery time",
    "rework_rate": "deployment rework rate",
    "batch_size": "batch size",
    "caught_before_traffic": "caught before production traffic",
    "incident_recovery": "incident recovery",
}
# Below this many deployments in the window, lead time, change failure rate and recovery time
# get no tier, a warning instead: one or two deployments say little of a team (docs/metrics.md).
MIN_DEPLOYMENTS = 5
DEFINITIONS = {
    "deployment_frequency": "successful deployments finished in the window, rollbacks "
    "excluded; per week = count / (days / 7), empty weeks included",
    "lead_time": "per commit of a successful deployment's range: from its {start} to the end "
    "of that deployment; each commit once (the first deployment of the service bringing "
    "it); a first deployment to an environment counts only commits within the look-back",
    "change_failure_rate": "deployments that served users and then needed intervention / "
    "deployments that served users, finished in the window, rollbacks excluded from both; "
    "needed intervention: a failed check or verification after taking traffic, rolled back, "
    "undone by a rollback, or an incident attributed to it (explicitly, or by the attribution "
    "window); each counts once; deployments stopped before taking traffic are not in it "
    "(caught before production traffic)",
    "recovery_time": "per change failure detected in the window: from detection (first of a "
    "failed check, a rollback starting, an attributed incident opening) to restored service "
    "(first of a later healthy rollback or deployment, never the failing one itself, or its "
    "incidents resolved); median, p90",
    "rework_rate": "unplanned deployments / deployments that served users, finished in the "
    "window, rollbacks included in both; unplanned: made because of a production failure — a "
    "rollback, a deployment marked as fixing an incident, or the deployment that restored "
    "service after a failure was known (fix-forward)",
    "batch_size": "commits counted for lead time per successful deployment in the window",
    "caught_before_traffic": "deployments finished in the window that were stopped by their "
    "checks before taking production traffic (e.g. a blue-green candidate failing its check "
    "before the switch); not change failures",
    "incident_recovery": "per incident no deployment is blamed for, opened in the window "
    "(overlapping ones of a service as one): from its opening to restored service (first "
    "healthy rollback or deployment, or its resolution); median, p90",
}


@dataclass
class _Agg:
    """The tallies of some days added up (leads, batches and recoveries in no order)."""

    deploys: int = 0
    deploy_days: int = 0
    cfr_total: int = 0
    cfr_failed: int = 0
    rework_total: int = 0
    unplanned: int = 0
    unrestored: int = 0
    caught: int = 0
    incident_unrestored: int = 0
    leads: Values = field(default_factory=lambda: EMPTY)
    batches: Values = field(default_factory=lambda: EMPTY)
    recoveries: Values = field(default_factory=lambda: EMPTY)
    incident_recoveries: Values = field(default_factory=lambda: EMPTY)


def _joined(parts: Sequence[Sequence[float] | Values]) -> Values:
    arrays = [np.asarray(p, dtype=np.float64) for p in parts if len(p)]
    if not arrays:
        return EMPTY
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def add_up(t: Tally, days: range) -> _Agg:
    def total(values: list[int]) -> int:
        return sum(values[days.start : days.stop])

    def merged(lists: list[list[float] | Values]) -> Values:
        return _joined(lists[days.start : days.stop])

    return _Agg(
        total(t.deploys),
        sum(1 for i in days if t.deploys[i]),
        total(t.cfr_total),
        total(t.cfr_failed),
        total(t.rework_total),
        total(t.rework_unplanned),
        total(t.unrestored),
        total(t.caught),
        total(t.incident_unrestored),
        merged(t.leads),
        merged(t.batches),
        merged(t.recoveries),
        merged(t.incident_recoveries),
    )


def _merge(parts: list[_Agg]) -> _Agg:
    """Add buckets up."""

    def runs(name: str) -> Values:
        return _joined([getattr(p, name) for p in parts])

    out = _Agg(
        *(sum(getattr(p, f) for p in parts) for f in _Agg.__dataclass_fields__ if f not in ARRAYS)
    )
    for name in ARRAYS:
        setattr(out, name, runs(name))
    return out


ARRAYS = ("leads", "batches", "recoveries", "incident_recoveries")


def series_of(window: Window, by: By, first: int, t: Tally) -> tuple[list[dict[str, Any]], _Agg]:
    """One row per day, week or month of the window, empty ones included, and the window's
    total."""
    rows, parts = [], []
    for start, end in window.buckets(by):
        a = add_up(t, range(first + (start - window.start).days, first + (end - window.start).days))
        parts.append(a)
        rows.append(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "days": (end - start).days,
                "deployments": a.deploys,
                "deploy_days": a.deploy_days,
                "commits": len(a.leads),
                "lead_time_median": rounded(median(a.leads)),
                "lead_time_p90": rounded(p90(a.leads)),
                "change_failure_rate": rounded(_ratio(a.cfr_failed, a.cfr_total)),
                "failed": a.cfr_failed,
                "cfr_deployments": a.cfr_total,
                "recovery_median": rounded(median(a.recoveries)),
                "recoveries": len(a.recoveries),
                "rework_rate": rounded(_ratio(a.unplanned, a.rework_total)),
                "unplanned": a.unplanned,
                "rework_deployments": a.rework_total,
                "batch_median": rounded(median(a.batches)),
                "caught": a.caught,
                "incident_recovery_median": rounded(median(a.incident_recoveries)),
                "incident_recoveries": len(a.incident_recoveries),
            }
        )
    return rows, _merge(parts)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def figures_of(
    window: Window,
    a: _Agg,
    table: tier_tables.TierTable,
    stages: dict[str, float] | None,
    wip: Mapping[str, Any] | None,
    lead_from: str = "committed",
) -> dict[str, Figure]:
    """The figures of one window from its added-up tallies, each with its tier."""
    weeks = window.days / 7
    interval = window.days / a.deploys if a.deploys else math.inf
    lead, recovery, batch = median(a.leads), median(a.recoveries), median(a.batches)
    cfr, rework = _ratio(a.cfr_failed, a.cfr_total), _ratio(a.unplanned, a.rework_total)
    incident = median(a.incident_recoveries)

    def figure(
        key: str,
        value: float | None,
        unit: str,
        n: int,
        detail: dict[str, Any],
        graded: float | None = None,
        lower_is_better: bool = True,
    ) -> Figure:
        # The tier table grades the metrics it has bounds for (None for the others), by the
        # figure's own value unless ``graded`` (frequency is graded by days between deploys).
        tier = table.classify(key, value if graded is None else graded)
        start = {"committed": "committer date", "authored": "author date"}
        definition = DEFINITIONS[key].format(start=start.get(lead_from, "first-seen time"))
        # Deployment frequency is exempt: the window's length is its sample (one deployment in
        # 90 days is a sound "low"); the default window fits a young service instead.
        rests_on = a.deploys if key == "lead_time" else a.cfr_total
        if tier is not None and key != "deployment_frequency" and rests_on < MIN_DEPLOYMENTS:
            detail["warning"] = (
                f"small sample: {rests_on} deployment{'' if rests_on == 1 else 's'} in the "
                f"window, fewer than the {MIN_DEPLOYMENTS} a tier needs"
            )
            tier = None
        return Figure(
            TITLES[key],
            value,
            unit,
            n,
            definition,
            tier,
            detail,
            lower_is_better=lower_is_better,
        )

    figures = {
        "deployment_frequency": figure(
            "deployment_frequency",
            a.deploys / weeks,
            "deployments per week",
            a.deploys,
            {
                "count": a.deploys,
                "days": window.days,
                "deploy_days": a.deploy_days,
                "deploy_days_per_week": a.deploy_days / weeks,
                "band": _band(interval),
            },
            graded=interval,
            lower_is_better=False,
        ),
        "lead_time": figure(
            "lead_time",
            lead,
            "seconds",
            len(a.leads),
            {"median": lead, "p90": p90(a.leads), "mean": _mean(a.leads)},
        ),
        "change_failure_rate": figure(
            "change_failure_rate",
            cfr,
            "ratio",
            a.cfr_total,
            {"failed": a.cfr_failed, "deployments": a.cfr_total},
        ),
        "recovery_time": figure(
            "recovery_time",
            recovery,
            "seconds",
            len(a.recoveries),
            {
                "median": recovery,
                "p90": p90(a.recoveries),
                "failures": len(a.recoveries) + a.unrestored,
                "not_restored": a.unrestored,
            },
        ),
        "rework_rate": figure(
            "rework_rate",
            rework,
            "ratio",
            a.rework_total,
            {"unplanned": a.unplanned, "deployments": a.rework_total},
        ),
        "batch_size": figure(
            "batch_size",
            batch,
            "commits",
            len(a.batches),
            {"median": batch, "p90": p90(a.batches), "mean": _mean(a.batches)},
        ),
        "caught_before_traffic": figure(
            "caught_before_traffic",
            float(a.caught),
            "deployments",
            a.caught + a.cfr_total,
            {
                "caught": a.caught,
                "share": _ratio(a.caught, a.caught + a.cfr_total),
            },
        ),
        "incident_recovery": figure(
            "incident_recovery",
            incident,
            "seconds",
            len(a.incident_recoveries),
            {
                "median": incident,
                "p90": p90(a.incident_recoveries),
                "incidents": len(a.incident_recoveries) + a.incident_unrestored,
                "not_restored": a.incident_unrestored,
            },
        ),
    }
    if stages is not None:
        total = sum(stages.values())
        figures["lead_time"].detail["stages"] = {
            name: {
                "mean": rounded(stages[name] / len(a.leads)) if len(a.leads) else None,
                "share": rounded(stages[name] / total) if total else None,
            }
            for name in SPLIT
        }
    if wip is not None:
        figures["work_in_progress"] = Figure(
            "work in progress",
            float(wip["total"]),
            "releases",
            int(wip["total"]),
            "releases built but not yet in this tier and newer than the last release that "
            "reached it, neither rejected nor superseded, by the furthest environment each "
            "reached; a snapshot of now",
            None,
            {"by_environment": dict(wip["by_environment"]), "by_service": dict(wip["by_service"])},
            list(wip.get("releases", [])),
        )
    return figures


def _mean(values: Values) -> float | None:
    return float(np.sum(values)) / len(values) if len(values) else None


def _band(interval_days: float) -> str:
    """The DORA deployment-frequency band from the mean days between deployments."""
    if interval_days < 1:
        return "on demand"
    if interval_days <= 7:
        return "daily–weekly"
    if interval_days <= MONTH_DAYS:
        return "weekly–monthly"
    return "less than monthly"
