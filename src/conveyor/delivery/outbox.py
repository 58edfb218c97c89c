"""Sending the outbox: every pending notice to its channel, with retries, off the deployment's
path. A notice is marked sent or failed (with the error) once delivery ends; a server that dies
mid-way sends the pending ones again after its restart (at least once).

A notifier's `${{ secrets.NAME }}` are its service's service-wide secrets: the notifier comes
from that service's file, like its jobs. The server's own settings (CONVEYOR_SMTP_URL,
CONVEYOR_MAIL_FROM, CONVEYOR_BASE_URL) are given by the server that reads them and used as
settings, never handed to a notifier's `${{ secrets }}`, whose URLs the pipeline's author
chooses."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from sqlalchemy import select

from conveyor.aio import wake_loop
from conveyor.notify.base import Notice
from conveyor.notify.send import DeliveryReport, deliver
from conveyor.secrets import SECRET_REF, Secrets, referenced
from conveyor.spec.models import Notifier
from conveyor.store.db import Store
from conveyor.store.models import Notification, Service, utcnow
from conveyor.store.vault import scoped

log = logging.getLogger("conveyor.notify")
SENDERS = 4


# eq=False: one server's sender, the same only as itself.
@dataclass(eq=False)
class Outbox:
    store: Store
    _: KW_ONLY
    # The server's own settings (CONVEYOR_BASE_URL, CONVEYOR_SMTP_URL, CONVEYOR_MAIL_FROM).
    base_url: str | None = None
    smtp_url: str | None = None
    mail_from: str | None = None
    attempts: int = 5
    backoff: float = 0.5
    poll_seconds: float = 0.5
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _busy: set[int] = field(default_factory=set, init=False)
    _slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SENDERS), init=False
    )
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def serve(self) -> None:
        try:
            await wake_loop(self.send_pending, self.wake, self.poll_seconds)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send_pending(self) -> None:
        for row_id, service, notifier, notice in await asyncio.to_thread(self._pending):
            if row_id in self._busy:
                continue
            self._busy.add(row_id)
            task = asyncio.create_task(self._send(row_id, service, notifier, notice))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Send everything pending now and wait for it (tests, shutdown)."""
        await self.send_pending()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _pending(self) -> list[tuple[int, str, dict[str, Any], dict[str, Any]]]:
        with self.store.session() as session:
            rows = session.execute(
                select(Notification, Service.name)
                .join(Service, Service.id == Notification.service_id)
                .where(Notification.status == "pending")
                .order_by(Notification.id)
                .limit(50)
            ).all()
            return [(r.id, name, dict(r.notifier), dict(r.notice)) for r, name in rows]

    async def _send(
        self, row_id: int, service: str, notifier: dict[str, Any], notice: dict[str, Any]
    ) -> None:
        try:
            async with self._slots:
                report = await self._deliver(row_id, service, notifier, notice)
            await asyncio.to_thread(self._record, row_id, report)
            if not report.ok:
                log.warning("notification %s failed: %s", row_id, report.error)
        finally:
            self._busy.discard(row_id)

    async def _deliver(
        self, row_id: int, service: str, notifier: dict[str, Any], notice: dict[str, Any]
    ) -> DeliveryReport:
        try:
            text = json.dumps(notifier)
            secrets = await asyncio.to_thread(scoped, self.store, service, referenced([text]))
            resolved = json.loads(_substitute(text, secrets))
            model = Notifier.model_validate(resolved)
            fields = {k: v for k, v in notice.items() if k in Notice.__dataclass_fields__}
            message = Notice(id=row_id, **fields)
        except Exception as exc:  # a broken notifier is reported on its row, never raised
            return DeliveryReport(ok=False, attempts=0, error=str(exc))
        return await deliver(
            model,
            message,
            base_url=self.base_url,
            default_smtp=self.smtp_url,
            default_from=self.mail_from,
            attempts=self.attempts,
            backoff=self.backoff,
        )

    def _record(self, row_id: int, report: DeliveryReport) -> None:
        with self.store.write() as w:
            row = w.session.get(Notification, row_id)
            if row is None:
                return
            row.status = "sent" if report.ok else "failed"
            row.attempts, row.error = report.attempts, report.error
            row.sent_at = utcnow() if report.ok else None


def _substitute(text: str, secrets: Secrets) -> str:
    """Secrets go into the JSON text as JSON strings, so a quote in a value cannot break it."""
    return SECRET_REF.sub(lambda m: json.dumps(secrets.get(m.group(1)))[1:-1], text)
