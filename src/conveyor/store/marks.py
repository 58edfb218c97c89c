"""Marks for the DORA summary: whatever may change a service's figures from some time on is
marked in the transaction that writes it, so a summary never misses a change and never
re-reads what did not change (metrics.summary takes the marks in).

Deployment facts written through the ORM and incidents added or changed through it are
marked here, by a flush hook on every write session; bulk inserts (history import) call
``mark`` themselves.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from conveyor.store.models import (
    Deployment,
    DeploymentFactRow,
    DoraMark,
    DoraSummary,
    Incident,
    Service,
)

# Summary profiles reports asked for before they were summarised, by database, in this
# process: a server answers those reports from the facts and its background service
# summarises the profiles (metrics.summary.keep_current), so no request waits for a whole
# history to be tallied.
_wanted: dict[str, set[str]] = {}
_wanted_lock = threading.Lock()


def _database(session: Session) -> str:
    return str(session.get_bind().engine.url)


def want_summary(session: Session, profile: str) -> None:
    with _wanted_lock:
        _wanted.setdefault(_database(session), set()).add(profile)


def take_wanted_summaries(session: Session) -> set[str]:
    with _wanted_lock:
        return _wanted.pop(_database(session), set())


def mark(session: Session, marks: dict[str, dt.datetime]) -> None:
    """Mark each service's figures as changed from its time on."""
    if marks:
        session.execute(
            insert(DoraMark), [{"service": name, "at": at} for name, at in sorted(marks.items())]
        )


def earliest(marks: dict[str, dt.datetime], service: str, at: dt.datetime | None) -> None:
    if at is not None and (service not in marks or at < marks[service]):
        marks[service] = at


def before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Mark new deployment facts (from their start) and incidents added or changed (from
    their opening, or from the start of the deployment they name if that is earlier)."""
    found: dict[str, dt.datetime] = {}
    for obj in session.new:
        if isinstance(obj, DeploymentFactRow):
            earliest(found, obj.service, min(obj.started_at, obj.finished_at))
    changed = [o for o in session.new | session.dirty if isinstance(o, Incident)]
    if changed:
        with session.no_autoflush:
            for inc in changed:
                if inc not in session.new and not session.is_modified(inc):
                    continue
                service = session.get(Service, inc.service_id)
                if service is None:
                    continue
                opened = inc.opened_at or dt.datetime.now(dt.UTC)
                named = session.get(Deployment, inc.deployment_id) if inc.deployment_id else None
                started = named.started_at if named is not None else None
                earliest(found, service.name, min(opened, started) if started else opened)
    if found:
        session.add_all(DoraMark(service=name, at=at) for name, at in sorted(found.items()))


def summary_work(session: Session) -> bool:
    """Whether a DORA summary has anything to take in: marks not yet dropped (every profile
    drops them once taken in), or facts and no summary yet. Cheap, and without importing the
    summary (numpy): an idle server stays small."""

    def any_row(column: Any) -> bool:
        return session.scalar(select(column).limit(1)) is not None

    if _database(session) in _wanted or any_row(DoraMark.id):
        return True
    if any_row(DoraSummary.profile):
        return False
    return any_row(DeploymentFactRow.id) or any_row(Incident.id)
