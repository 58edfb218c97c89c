"""A notice: one delivery event, in the shape every notification channel renders.

The delivery controller writes notices to an outbox in the store (persist first), then a sender
delivers each to its channel with retries; a channel that keeps failing is recorded and never
blocks or fails a deployment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.events import NOTICE_TITLES
from conveyor.extensions import Extension, Kind, Options

__all__ = ["NOTICE_TITLES", "Notice", "NotifyContext", "NotifyError", "notifier"]


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
    summary: str
    at: str
    service: str
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
        # Every field, in their order, with the title after the event.
        body = asdict(self)
        return {"id": body.pop("id"), "event": body.pop("event"), "title": self.title, **body}


@dataclass(frozen=True)
class NotifyContext:
    """What the server tells every channel: its public URL (for links back) and the defaults
    of its own mail settings."""

    base_url: str | None = None
    default_smtp: str | None = None
    default_from: str | None = None


Send = Callable[[Any, Notice, NotifyContext], Awaitable[None]]


def notifier(
    name: str, options: type[Options], send: Send, summary: str = "", *, order: int = 100
) -> Extension:
    """The registry entry of a notifier: ``send(options, notice, context)`` makes one attempt
    and raises NotifyError when it did not arrive."""
    return Extension(Kind.NOTIFIER, name, options, send, summary, order=order)
