"""Recording accepted changes with group commit: concurrent webhook requests are written in
one transaction, and each request is answered only after that transaction has committed
(persist first, then answer), so a burst of deliveries costs one commit, not one each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from conveyor.sources.intake import record_changes
from conveyor.store.db import Store


@dataclass
class _Pending:
    change: dict[str, Any]
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ChangeRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()

    async def record(
        self, *, source: str, delivery_id: str, service: str, payload: dict[str, Any]
    ) -> bool:
        """Record a change durably; False when this delivery was recorded before."""
        item = _Pending(
            {"source": source, "delivery_id": delivery_id, "service": service, "payload": payload}
        )
        self._pending.append(item)
        self._wake.set()
        return await item.done

    def _write(self, changes: list[dict[str, Any]]) -> list[bool]:
        with self.store.write() as w:
            return record_changes(w, changes)

    async def serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                # In a thread: while this batch commits, the loop takes the next requests,
                # which then make one batch together (a write blocking the loop would keep
                # every batch at one request).
                results = await asyncio.to_thread(self._write, [item.change for item in batch])
            except Exception as exc:  # nothing in the batch was stored: every sender hears why
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            for item, new in zip(batch, results, strict=True):
                if not item.done.done():
                    item.done.set_result(new)
