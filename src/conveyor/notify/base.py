"""A notice: one delivery event, in the shape every notification channel renders.

The delivery controller writes notices to an outbox in the store (persist first), then a sender
delivers each to its channel with retries; a channel that keeps failing is recorded and never
blocks or fails a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.events import NOTICE_TITLES

__all__ = ["NOTICE_TITLES", "Notice", "NotifyError"]


class NotifyError(ConveyorError):
    """One attempt to deliver a notice failed (the message says why: status, refusal, timeout).
    ``retry`` is False when trying again cannot help (a 4xx other than 429)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Notice:
    """What happened, to whom, with a link back to Conveyor.

    ``event`` is one of the `notify.on` names (``deployment.failed``...). ``summary`` is one
    sentence ("shop-api r12-ab12cd3 failed its health check in production: GET /healthz → 503").
    ``approval_id`` is set for ``approval.requested`` (channels that can, offer approve/reject).
    """

    id: int
    event: str
    service: str
    summary: str
    at: str
    environment: str | None = None
    release: str | None = None
    sha: str | None = None
    deployment_id: int | None = None
    approval_id: int | None = None
    incident_id: int | None = None
    url: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return NOTICE_TITLES.get(self.event, self.event)

    def as_json(self) -> dict[str, Any]:
        """The JSON body of a generic webhook (stable, documented in docs/notifications.md)."""
        return {
            "id": self.id,
            "event": self.event,
            "title": self.title,
            "summary": self.summary,
            "at": self.at,
            "service": self.service,
            "environment": self.environment,
            "release": self.release,
            "sha": self.sha,
            "deployment_id": self.deployment_id,
            "approval_id": self.approval_id,
            "incident_id": self.incident_id,
            "url": self.url,
            "fields": self.fields,
        }
