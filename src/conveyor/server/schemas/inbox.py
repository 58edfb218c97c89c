"""The inbox and the notifications' deliveries (server/inbox.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from conveyor.server.schemas.common import Schema

__all__ = ["InboxNotice", "NotificationOut"]


class InboxNotice(Schema):
    id: int = Field(description="The cursor: `after` takes it.")
    event: str = Field(description="A notify.on name (deployment.failed, approval.requested...).")
    title: str
    summary: str | None = Field(description="One sentence.")
    at: str = Field(description="When it happened (ISO 8601, as the notice recorded it).")
    service: str
    environment: str | None
    release: Any = Field(description="The release's name (r<id>-<short sha>), if any.")
    sha: str | None
    deployment_id: int | None
    approval_id: int | None
    incident_id: int | None
    url: str | None = Field(description="A link back to Conveyor.")
    fields: dict[str, Any]


class NotificationOut(Schema):
    id: int
    service: str
    event: str
    channel: str = Field(description="slack, webhook, email or inbox.")
    status: str = Field(description="pending, sent or failed.")
    attempts: int
    error: str | None = Field(description="The last delivery error.")
    created_at: dt.datetime
    sent_at: dt.datetime | None
    summary: str | None
