"""Incidents, Alertmanager's webhook and ignored alerts (server/alerts.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from conveyor.server.schemas.common import Number, Schema

__all__ = [
    "AlertOutcome",
    "AlertmanagerAnswer",
    "Attribution",
    "IgnoredAlert",
    "IncidentListed",
    "IncidentOut",
]


class Attribution(Schema):
    how: str = Field(
        description="explicit (named by whoever opened it), window (the deployment that "
        "finished last before it, within the attribution window) or none."
    )
    detail: str = Field(description="Why, in words.")


class IncidentOut(Schema):
    id: int
    service: str
    environment: str | None
    status: str = Field(description="open or resolved.")
    title: str
    source: str = Field(description="Where it came from: api, cli, alertmanager, import.")
    deployment: int | None = Field(description="The deployment it is attributed to.")
    release: int | None
    version: str | None = Field(description="The release's name: r<id>-<short sha>.")
    fingerprint: str | None = Field(description="The alert's, for incidents opened by one.")
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str | None
    attribution: Attribution
    restored_at: dt.datetime | None = Field(
        description="When service was restored (a rollback or a fix deployed), if Conveyor knows."
    )
    restored_by: str | None = Field(
        description='What restored it: "resolved", or "rollback deployment <id>".'
    )
    recovery_seconds: Number | None = Field(
        description="Seconds from opened to restored (or, in lists, to resolved when the "
        "restore is not known); null while open and not restored."
    )
    alert: dict[str, Any] | None = Field(
        description="The Alertmanager alert behind it (labels, annotations, starts_at...)."
    )


class IncidentListed(IncidentOut):
    deployment_key: str | None = Field(
        description="An imported incident's deployment, by the import's fact key."
    )


class IgnoredAlert(Schema):
    service: str | None
    alert: str | None = Field(description="The alertname label.")
    status: str | None = Field(description="firing or resolved.")
    fingerprint: str | None
    received_at: dt.datetime
    reason: str | None = Field(description="Why it opened nothing.")


class AlertOutcome(Schema):
    fingerprint: str
    alert: str
    status: str
    outcome: Literal["opened", "updated", "unchanged", "resolved", "ignored"]
    incident: int | None
    reason: str | None


class AlertmanagerAnswer(Schema):
    status: Literal["ok"]
    receiver: str
    alerts: list[AlertOutcome] = Field(description="What each alert did, in order.")
