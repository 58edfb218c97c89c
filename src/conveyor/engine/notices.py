"""Queue notices in the outbox, in the transaction of the event they announce.

The pipeline file of the release decides who hears what (`notify:` with `on:`); a notice is
written once per interested notifier and delivered later by the outbox sender, so a crash
between the event and the message loses neither.
"""

from __future__ import annotations

from typing import Any

from conveyor.events import NoticeEvent
from conveyor.spec.models import Pipeline
from conveyor.store.db import Writer
from conveyor.store.models import Notification, utcnow


def queue_notices(
    w: Writer,
    pipeline: Pipeline,
    *,
    service_id: int,
    event: NoticeEvent,
    service: str,
    summary: str,
    **details: Any,
) -> int:
    """Write one outbox row per notifier listening for ``event``; returns how many."""
    count = 0
    notice = {
        "event": event,
        "service": service,
        "summary": summary,
        "at": utcnow().isoformat(timespec="seconds"),
        **{k: v for k, v in details.items() if v is not None},
    }
    for notifier in pipeline.notify:
        if event not in notifier.on:
            continue
        w.session.add(
            Notification(
                service_id=service_id,
                event=event,
                channel=notifier.kind,
                notifier=notifier.model_dump(mode="json", by_alias=True, exclude_none=True),
                notice=notice,
                status="pending",
                attempts=0,
                created_at=utcnow(),
            )
        )
        count += 1
    return count
