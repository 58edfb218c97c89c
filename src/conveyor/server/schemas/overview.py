"""GET /overview: every service × environment at a glance (views/overview.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from conveyor.server.schemas.common import Schema

__all__ = [
    "Overview",
    "OverviewDeployment",
    "OverviewEnvironment",
    "OverviewHealth",
    "OverviewInProgress",
    "OverviewQueue",
    "OverviewQueued",
    "OverviewRelease",
    "OverviewRun",
    "OverviewService",
]


class OverviewRelease(Schema):
    id: int
    version: str
    sha: str
    ref: str | None
    message: str = Field(description="The commit's first line.")
    author: str | None
    created_at: dt.datetime


class OverviewDeployment(Schema):
    id: int
    status: str
    kind: str
    release: int
    reason: str | None
    finished_at: dt.datetime | None


class OverviewHealth(Schema):
    state: str = Field(description="healthy, unhealthy or unknown.")
    healthy: bool | None
    checked_at: dt.datetime | None
    detail: str | None
    last_deployment: OverviewDeployment | None
    last_check: Any = Field(description="The last deployment's last check result.")


class OverviewInProgress(Schema):
    deployment: int
    release: int
    status: str
    kind: str


class OverviewQueued(Schema):
    id: int
    release: int
    status: str


class OverviewQueue(Schema):
    count: int
    releases: list[int]
    deployments: list[OverviewQueued]


class OverviewEnvironment(Schema):
    environment: str
    tier: str | None
    after: str | None = Field(description="The environment a release must reach first.")
    release: OverviewRelease | None = Field(description="What serves there.")
    since: dt.datetime | None
    url: str | None
    health: OverviewHealth
    held: bool
    held_by: str | None
    hold_reason: str | None
    in_progress: OverviewInProgress | None
    queued: OverviewQueue
    pending_approvals: int
    open_incidents: int


class OverviewRun(Schema):
    id: int
    status: str
    sha: str
    ref: str | None
    message: str
    trigger: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = Field(description="Seconds; still counting while it runs.")


class OverviewService(Schema):
    name: str
    environments: list[OverviewEnvironment] = Field(description="In the pipeline's chain order.")
    runs: list[OverviewRun] = Field(description="The latest runs, newest first.")
    pending_approvals: int
    open_incidents: int


class Overview(Schema):
    services: list[OverviewService]
    pending_approvals: int
    open_incidents: int
    generated_at: dt.datetime
