"""GET /dora: the DORA report as `conveyor dora --json` prints it (metrics/dora_report.py)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from conveyor.server.schemas.common import Number, Schema

__all__ = [
    "DoraFigure",
    "DoraReport",
    "DoraScope",
    "DoraSeriesRow",
    "DoraSettings",
    "DoraTiers",
    "DoraWindow",
]


class DoraWindow(Schema):
    from_: str = Field(alias="from", description="The first day (ISO date), in time_zone.")
    to: str = Field(description="The day after the last (ISO date): the window is [from, to).")
    days: int
    time_zone: str
    week_start: str
    start: str = Field(description="The window's first instant (ISO 8601, UTC).")
    end: str = Field(description="The instant it ends (ISO 8601, UTC).")
    note: str | None = Field(
        None, description="Why the window differs from the default (cut to the history)."
    )

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class DoraScope(Schema):
    service: str | None = Field(description="The service asked for; null: every one.")
    env_tier: str = Field(description="The environment tier measured (e.g. production).")
    services: list[str] = Field(description="The services measured.")
    environments: list[str] = Field(description="The environments of that tier measured.")


class DoraSettings(Schema):
    by: str = Field(description="The series' buckets: day, week or month.")
    lead_time_from: str = Field(description="Lead time starts when committed, authored or seen.")
    look_back_days: Number = Field(
        description="How old a first deployment's commits may be and still count for lead time."
    )
    attribution_window_hours: Number = Field(
        description="How long after a deployment finished an incident is still blamed on it."
    )
    percentiles: str = Field(description="How the median and p90 are computed.")


class DoraTiers(Schema):
    table: str = Field(description="The tier table used (its id).")
    year: int
    title: str
    publisher: Any
    url: str
    section: Any
    tiers: list[dict[str, str]] = Field(
        description="Each tier's name and its bound for each metric, in words."
    )
    notes: list[Any]


class DoraFigure(Schema):
    """One metric over the window. Besides these, each metric has its own details (count,
    median, p90, mean, failed, deployments, stages...; `conveyor dora --explain` and
    docs/dora.md describe them)."""

    model_config = ConfigDict(extra="allow")

    title: str
    value: Number | None = Field(description="In `unit`; null: nothing to measure.")
    unit: str = Field(description="seconds, ratio, deployments per week, commits, releases.")
    sample_size: int = Field(description="How many values the figure is made of.")
    tier: str | None = Field(description="The tier the value meets; null: no tier for it.")
    previous: Number | None = Field(description="The value over the previous window.")
    trend: str | None = Field(description="up, down or flat from the previous value.")
    better: bool | None = Field(description="Whether the trend is for the better.")
    definition: str
    explanation: list[dict[str, Any]] | None = Field(
        None, description="With ?explain=true: what is behind the figure."
    )


class DoraSeriesRow(Schema):
    start: str = Field(description="The bucket's first day (ISO date).")
    end: str = Field(description="The day after its last.")
    days: int
    deployments: int
    deploy_days: int = Field(description="Days with at least one deployment.")
    commits: int = Field(description="Commits whose lead time counts in this bucket.")
    lead_time_median: Number | None = Field(description="Seconds.")
    lead_time_p90: Number | None = Field(description="Seconds.")
    change_failure_rate: Number | None = Field(description="A ratio (0 to 1).")
    failed: int
    cfr_deployments: int
    recovery_median: Number | None = Field(description="Seconds.")
    recoveries: int
    rework_rate: Number | None = Field(description="A ratio (0 to 1).")
    unplanned: int
    rework_deployments: int
    batch_median: Number | None = Field(description="Commits per deployment.")
    caught: int = Field(description="Deployments stopped by their checks before taking traffic.")
    incident_recovery_median: Number | None = Field(
        description="Seconds, incidents no deployment is blamed for."
    )
    incident_recoveries: int


class DoraReport(Schema):
    window: DoraWindow
    previous_window: DoraWindow | None = Field(description="The window of the same length before.")
    scope: DoraScope
    settings: DoraSettings
    tiers: DoraTiers
    metrics: dict[str, DoraFigure] = Field(
        description="deployment_frequency, lead_time, change_failure_rate, recovery_time, "
        "rework_rate, batch_size, caught_before_traffic, incident_recovery and (when known) "
        "work_in_progress."
    )
    series: list[DoraSeriesRow] = Field(description="One row per day, week or month.")
