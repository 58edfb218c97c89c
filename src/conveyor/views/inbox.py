"""The inbox as people read it: the `inbox` channel's notices (conveyor.notify.inbox), newest
first, and how every channel's deliveries went."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from conveyor.notify.base import NOTICE_TITLES
from conveyor.notify.inbox import CHANNEL
from conveyor.store.db import Store
from conveyor.store.models import Notification, Service
from conveyor.views.filters import filtered

__all__ = ["deliveries", "inbox_notices"]


def _entry(row: Notification, service: str) -> dict[str, Any]:
    notice = dict(row.notice)
    event = str(notice.get("event") or row.event)
    return {
        "id": row.id,
        "event": event,
        "title": NOTICE_TITLES.get(event, event),
        "summary": notice.get("summary"),
        "at": notice.get("at") or row.created_at.isoformat(timespec="seconds"),
        "service": notice.get("service") or service,
        "environment": notice.get("environment"),
        "release": notice.get("release"),
        "sha": notice.get("sha"),
        "deployment_id": notice.get("deployment_id"),
        "approval_id": notice.get("approval_id"),
        "incident_id": notice.get("incident_id"),
        "url": notice.get("url"),
        "fields": notice.get("fields") or {},
    }


def _newest(limit: int) -> Select[Notification, str]:
    """The newest ``limit`` notices with the names of their services."""
    return (
        select(Notification, Service.name)
        .join(Service, Service.id == Notification.service_id)
        .order_by(Notification.id.desc())
        .limit(limit)
    )


def inbox_notices(
    store: Store,
    *,
    service: str | None = None,
    event: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Inbox notices, newest first; ``after`` an id: only newer ones (for polling)."""
    with store.session() as session:
        query = _newest(limit).where(Notification.channel == CHANNEL, Notification.id > after)
        query = filtered(query, (Service.name, service), (Notification.event, event))
        return [_entry(row, name) for row, name in session.execute(query).all()]


def deliveries(
    store: Store, *, service: str | None = None, channel: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Every channel's notices and how their delivery went (status, attempts, last error),
    newest first. The notifier's settings are left out: a webhook URL may be a credential."""
    with store.session() as session:
        query = filtered(_newest(limit), (Service.name, service), (Notification.channel, channel))
        return [
            {
                "id": row.id,
                "service": name,
                "event": row.event,
                "channel": row.channel,
                "status": row.status,
                "attempts": row.attempts,
                "error": row.error,
                "created_at": row.created_at,
                "sent_at": row.sent_at,
                "summary": dict(row.notice).get("summary"),
            }
            for row, name in session.execute(query).all()
        ]
