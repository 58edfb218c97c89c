"""Runs that a process of their own drives (`conveyor run` writes its pid in `owner`): those
not finished are the ones whose driver may have died (conveyor.engine.recovery)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.states import RunStatus
from conveyor.store.models import Run


def owned_unfinished_runs(session: Session) -> list[tuple[int, str | None, dt.datetime | None]]:
    """(run id, owner, last heartbeat) of each queued or running run that has an owner.

    Runs without an owner are the server's: their jobs are leased to runners, and lost runners
    are handled by lease expiry (conveyor.engine.dispatch), not by their owner."""
    rows = session.execute(
        select(Run.id, Run.owner, Run.heartbeat_at).where(
            Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]), Run.owner.is_not(None)
        )
    ).all()
    return [(run_id, owner, beat) for run_id, owner, beat in rows]
