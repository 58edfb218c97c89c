"""Reading an append-only table (the event log) in id order, safe against ids that commit out of
order: what every consumer of the log (/metrics, CDEvents) follows it with."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

__all__ = ["GAP_GRACE_SECONDS", "Tail"]

# Ids missing from an append-only table are waited for this long (see Tail.settle).
GAP_GRACE_SECONDS = 10.0


class Tail:
    """A position in an append-only table read in id order, safe against ids that commit out of
    order.

    On PostgreSQL a transaction that took id 100 may commit after one that took id 101; a reader
    that moved past 101 at once would never see 100. So a reader only moves through ids it has
    seen, in order: at a missing id it stops, and waits for it at most ``grace`` seconds (a
    transaction in flight commits within that; after it, the id was rolled back and never
    comes). On SQLite ids are always contiguous and this never waits.
    """

    def __init__(
        self,
        position: int = 0,
        *,
        grace: float = GAP_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.position = position
        self.grace = grace
        self.clock = clock
        self._gaps: dict[int, float] = {}

    def settle(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` (ascending, all above the position) may be consumed now."""
        expected = self.position + 1
        now = self.clock()
        for index, id_ in enumerate(ids):
            if id_ != expected:
                first_seen = self._gaps.setdefault(expected, now)
                if now - first_seen < self.grace:
                    return index
            expected = id_ + 1
        return len(ids)

    def advance(self, position: int) -> None:
        self.position = max(self.position, position)
        for gap in [g for g in self._gaps if g <= self.position]:
            del self._gaps[gap]

    def waiting(self) -> bool:
        """Whether a missing id is holding the tail back."""
        return bool(self._gaps)

    def next_ids(self, session: Session, id_column: Any, limit: int) -> list[int]:
        """The ids after the position that may be consumed now (see `settle`)."""
        ids = list(
            session.connection().scalars(
                select(id_column).where(id_column > self.position).order_by(id_column).limit(limit)
            )
        )
        return ids[: self.settle(ids)]
