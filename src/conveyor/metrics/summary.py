"""The DORA summary: the engine's per-day tallies, kept per service and local day, so a report
adds days up instead of re-reading a million deployments and five million commits.

A *profile* is what changes a day's tally: the environment tier, the time zone (days are local
days), where lead time starts, the look-back and the attribution window. Each profile used is
summarised on first use (every service, in turn) and kept current by marks (store.marks):
whatever may change a service's figures from some time on writes a mark in its own
transaction; before a report, the marks not yet taken in are read under a lock, and the
marked services are tallied again from the last success before the mark (less the attribution
window: an incident may blame a deployment that far back) to their last day.

That is exact because a day's tally depends on the facts around it, never on the span it was
computed in (metrics.dora.tally_days); tests/metrics/test_dora_summary.py compares summary and
engine reports over random histories, windows and time zones.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import replace
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from conveyor.metrics.dora import Settings, Window, day_instants, report_of, tally_days
from conveyor.metrics.dora_options import EARLIEST, LATEST
from conveyor.metrics.dora_report import SPLIT, DoraReport, Tally
from conveyor.store.db import Store
from conveyor.store.marks import take_wanted_summaries, want_summary
from conveyor.store.models import (
    DeploymentFactRow,
    DoraDay,
    DoraMark,
    DoraSummary,
    Incident,
    Service,
    utcnow,
)

# 2: the definitions of 2024 (caught before traffic, incident recovery apart).
VERSION = 2
# A service's days are tallied at most this many at a time (bounded memory for busy services).
CHUNK_DAYS = 366
# A profile nobody asked for in this long is dropped (with its days).
UNUSED = dt.timedelta(days=30)
F = DeploymentFactRow
FLOAT = np.dtype("<f8")
# The service name of the rows that add every service up.
ALL = "*"


def profile_of(window: Window, settings: Settings) -> str:
    return "|".join(
        [
            f"v{VERSION}",
            settings.tier,
            window.tz,
            settings.lead_time_from,
            f"{settings.look_back.total_seconds():g}",
            f"{settings.attribution_window.total_seconds():g}",
        ]
    )


def default_profile() -> str:
    return profile_of(Window(dt.date(2000, 1, 1), dt.date(2000, 1, 2)), Settings())


def keep_current(store: Store) -> None:
    """Bring every profile in use up to date, summarising the default one (production, UTC,
    the default settings) first if nobody has yet: the server does this in the background, so
    reports it serves only add days up."""
    with store.session() as session:
        profiles: set[str] = {
            *session.scalars(select(DoraSummary.profile)),
            *take_wanted_summaries(session),
        }
    for profile in sorted({default_profile(), *profiles}):
        parts = profile.split("|")
        if parts[0] != f"v{VERSION}" or len(parts) != 6:
            continue
        _, tier, tz, lead_from, look_back, attribution = parts
        settings = Settings(
            tier=tier,
            lead_time_from=lead_from,  # type: ignore[arg-type]
            look_back=dt.timedelta(seconds=float(look_back)),
            attribution_window=dt.timedelta(seconds=float(attribution)),
        )
        refresh(store, profile, tz, settings, touch=False)


def report(
    store: Store, window: Window, settings: Settings, *, summarise: bool = True
) -> DoraReport | None:
    """The report of ``window`` from the summary (brought up to date first). A profile not
    summarised yet is summarised now, or, unless ``summarise``, left to the background
    (keep_current): None, the caller reads the facts this time."""
    from conveyor.metrics.load import work_in_progress

    profile = profile_of(window, settings)
    if not refresh(store, profile, window.tz, settings, summarise=summarise):
        return None
    span = window.previous() if settings.compare else window
    with store.session() as session:
        tally = read(session, profile, span.start, window.end, settings.service)
        wip = work_in_progress(session, settings)
    return report_of(tally, window, settings, wip)


def read(
    session: Session, profile: str, start: dt.date, end: dt.date, service: str | None
) -> Tally:
    """The tallies of the days [start, end): of one service, or of all (their "*" rows)."""
    rows = _fetch(session, profile, start.toordinal(), end.toordinal(), service or ALL)
    return _tally_of(rows, start.toordinal(), (end - start).days)


def _fetch(session: Session, profile: str, lo: int, hi: int | None, service: str | None) -> Any:
    """Rows of the days [lo, hi) of ``service`` (None: every service's own rows), by day."""
    d = DoraDay
    stmt = select(
        d.day,
        d.environments,
        d.services,
        d.deploys,
        d.cfr_total,
        d.cfr_failed,
        d.rework_total,
        d.rework_unplanned,
        d.unrestored,
        d.caught,
        d.incident_unrestored,
        d.leads,
        d.batches,
        d.recoveries,
        d.incident_recoveries,
        d.stages,
    ).where(d.profile == profile, d.day >= lo)
    if hi is not None:
        stmt = stmt.where(d.day < hi)
    stmt = stmt.where(d.service == service) if service else stmt.where(d.service != ALL)
    result = session.connection().execute(stmt.order_by(d.day))
    assert result.cursor is not None
    rows = result.cursor.fetchall()
    result.close()
    return rows


def _tally_of(rows: Any, first: int, n: int) -> Tally:
    """Rows (one or several per day) added up into a tally of ``n`` days from ``first``."""
    tally = Tally(n)
    parts: list[list[list[bytes]]] = [[[], [], [], []] for _ in range(n)]
    stage_sums = np.zeros((n, len(SPLIT)))
    for day, envs, svcs, *counts, leads, batches, recoveries, incident, stages in rows:
        i = day - first
        deploys, cfr_total, cfr_failed, rework, unplanned, unrestored, caught, open_ = counts
        tally.deploys[i] += deploys
        tally.cfr_total[i] += cfr_total
        tally.cfr_failed[i] += cfr_failed
        tally.rework_total[i] += rework
        tally.rework_unplanned[i] += unplanned
        tally.unrestored[i] += unrestored
        tally.caught[i] += caught
        tally.incident_unrestored[i] += open_
        day_parts = parts[i]
        for k, blob in enumerate((leads, batches, recoveries, incident)):
            if blob:
                day_parts[k].append(bytes(blob))
        stage_sums[i] += np.frombuffer(bytes(stages), FLOAT)
        if envs:
            tally.envs[i].update(envs.split("\n"))
            tally.services[i].update(svcs.split("\n"))
    for i, (leads_, batches_, recoveries_, incident_) in enumerate(parts):
        tally.leads[i] = _array(leads_)
        tally.batches[i] = _array(batches_)
        tally.recoveries[i] = _array(recoveries_)
        tally.incident_recoveries[i] = _array(incident_)
        tally.stages[i] = stage_sums[i].tolist()
    return tally


def _array(blobs: list[bytes]) -> Any:
    return np.frombuffer(b"".join(blobs), FLOAT) if blobs else []


# --- keeping it current -------------------------------------------------------------------------


def refresh(
    store: Store,
    profile: str,
    tz: str,
    settings: Settings,
    *,
    touch: bool = True,
    summarise: bool = True,
) -> bool:
    """Take in the marks written since the profile was last brought up to date (summarising
    the profile first if it is new, unless ``summarise``: then it is left to the background and
    False says the profile is not there); ``touch``: a report uses it (unused ones are
    dropped)."""
    with store.session() as session:
        state = session.get(DoraSummary, profile)
        latest = session.scalar(select(func.max(DoraMark.id))) or 0
        if state is None and not summarise:
            want_summary(session, profile)
            return False
    if state is None:
        _build(store, profile, tz, settings)
        return True
    now = utcnow()
    if latest <= state.last_mark_id and (not touch or now - state.used_at < dt.timedelta(hours=1)):
        return True
    with store.write() as w:
        session = w.session
        _lock_marks(session)
        state = session.get(DoraSummary, profile)
        if state is None:  # dropped meanwhile: summarise again next time
            return True
        marked = session.execute(
            select(DoraMark.service, func.min(DoraMark.at))
            .where(DoraMark.id > state.last_mark_id)
            .group_by(DoraMark.service)
        ).all()
        upto = session.scalar(select(func.max(DoraMark.id))) or state.last_mark_id
        starts = [
            _retally(session, profile, tz, settings, service, _aware(at)) for service, at in marked
        ]
        if starts:
            _aggregate(session, profile, min(starts))
        state.last_mark_id, state.refreshed_at = upto, now
        if touch:
            state.used_at = now
        _prune(session, now)
    return True


def _build(store: Store, profile: str, tz: str, settings: Settings) -> None:
    """Summarise a new profile: note the marks written so far (under the lock, so none is
    still being written), then tally every service; later marks are taken in by refresh."""
    with store.write() as w:
        _lock_marks(w.session)
        upto = w.session.scalar(select(func.max(DoraMark.id))) or 0
    with store.session() as session:
        deployed = select(F.service).where(F.tier == settings.tier).distinct()
        # Each service looks its incidents up (an index seek), rather than reading them all.
        with_incidents = select(Service.name).where(
            select(Incident.id).where(Incident.service_id == Service.id).exists()
        )
        services = sorted(set(session.scalars(deployed)) | set(session.scalars(with_incidents)))
    for service in services:
        with store.write() as w:
            _lock_marks(w.session)
            _retally(w.session, profile, tz, settings, service, None)
    with store.write() as w:
        _lock_marks(w.session)
        _aggregate(w.session, profile, 0)
        now = utcnow()
        if w.session.get(DoraSummary, profile) is None:
            w.session.add(
                DoraSummary(profile=profile, last_mark_id=upto, refreshed_at=now, used_at=now)
            )
            w.session.flush()
        _prune(w.session, now)


def _retally(
    session: Session,
    profile: str,
    tz: str,
    settings: Settings,
    service: str,
    at: dt.datetime | None,
) -> int:
    """Tally ``service`` again from the day its figures may have changed (``at``: a mark's
    time; None: from its first deployment) to its last day; that first day (an ordinal)."""
    from conveyor.metrics.load import facts_from

    scope = [F.service == service, F.tier == settings.tier]
    deployed: tuple[dt.datetime | None, dt.datetime | None] = session.execute(
        select(func.min(F.finished_at), func.max(F.finished_at)).where(*scope)
    ).one()
    opened = session.execute(
        select(func.min(Incident.opened_at), func.max(Incident.opened_at))
        .join(Service, Service.id == Incident.service_id)
        .where(Service.name == service)
    ).one()
    first = min(filter(None, [deployed[0], opened[0]]), default=None)
    last = max(filter(None, [deployed[1], opened[1]]), default=None)
    if first is None or last is None:
        session.execute(
            delete(DoraDay).where(DoraDay.profile == profile, DoraDay.service == service)
        )
        return 0
    since = _aware(first)
    if at is not None:
        before = session.scalar(
            select(func.max(F.finished_at)).where(
                *scope, F.kind == "deploy", F.result == "succeeded", F.finished_at < at
            )
        )
        since = min(at, _aware(before) if before is not None else at)
    zone = ZoneInfo(tz)
    # Reports cover EARLIEST..LATEST (dora_options): facts dated outside (an import's typo)
    # are not tallied, and the arithmetic around them cannot overflow.
    since = min(max(since, _instant(EARLIEST)), _instant(LATEST))
    start = (since - settings.attribution_window).astimezone(zone).date()
    end_at = min(max(utcnow(), _aware(last)), _instant(LATEST)) + settings.attribution_window
    end = end_at.astimezone(zone).date() + dt.timedelta(days=1)
    session.execute(
        delete(DoraDay).where(
            DoraDay.profile == profile,
            DoraDay.service == service,
            DoraDay.day >= start.toordinal(),
        )
    )
    one = replace(settings, service=service, compare=False, explain=False)
    chunk = start
    while chunk < end:
        upto = min(end, chunk + dt.timedelta(days=CHUNK_DAYS))
        window = Window(chunk, upto, tz)
        facts = facts_from(session, window, one, wip=False)
        tally = tally_days(facts, day_instants(window, upto), one)
        rows = list(_rows(profile, service, chunk.toordinal(), tally))
        if rows:
            session.execute(insert(DoraDay), rows)
        chunk = upto
    return start.toordinal()


def _rows(profile: str, service: str, start: int, t: Tally) -> Any:
    for i in range(len(t.deploys)):
        if not (
            t.rework_total[i]
            or len(t.recoveries[i])
            or t.unrestored[i]
            or t.envs[i]
            or len(t.incident_recoveries[i])
            or t.incident_unrestored[i]
        ):
            continue
        yield {
            "profile": profile,
            "service": service,
            "day": start + i,
            "environments": "\n".join(sorted(t.envs[i])),
            "services": "\n".join(sorted(t.services[i])),
            "deploys": t.deploys[i],
            "cfr_total": t.cfr_total[i],
            "cfr_failed": t.cfr_failed[i],
            "rework_total": t.rework_total[i],
            "rework_unplanned": t.rework_unplanned[i],
            "unrestored": t.unrestored[i],
            "caught": t.caught[i],
            "incident_unrestored": t.incident_unrestored[i],
            "leads": _blob(t.leads[i]),
            "batches": _blob(t.batches[i]),
            "recoveries": _blob(t.recoveries[i]),
            "incident_recoveries": _blob(t.incident_recoveries[i]),
            "stages": np.asarray(t.stages[i], FLOAT).tobytes(),
        }


def _aggregate(session: Session, profile: str, since: int) -> None:
    """Write the "*" rows (all services added up) of the days from ``since`` on again."""
    session.execute(
        delete(DoraDay).where(
            DoraDay.profile == profile, DoraDay.service == ALL, DoraDay.day >= since
        )
    )
    rows = _fetch(session, profile, since, None, None)
    i = 0
    while i < len(rows):
        lo = rows[i][0]
        j = bisect.bisect_left(rows, lo + CHUNK_DAYS, lo=i, key=itemgetter(0))
        tally = _tally_of(rows[i:j], lo, CHUNK_DAYS)
        written = list(_rows(profile, ALL, lo, tally))
        if written:
            session.execute(insert(DoraDay), written)
        i = j


def _blob(values: Any) -> bytes:
    return np.sort(np.asarray(values, FLOAT)).tobytes() if len(values) else b""


def _lock_marks(session: Session) -> None:
    """Wait for transactions writing marks to end, and keep new ones out until this one ends;
    also one summary writer at a time (on SQLite a write transaction is exclusive already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE dora_marks IN EXCLUSIVE MODE"))


def _prune(session: Session, now: dt.datetime) -> None:
    stale = select(DoraSummary.profile).where(
        DoraSummary.used_at < now - UNUSED, DoraSummary.profile != default_profile()
    )
    gone = list(session.scalars(stale))
    if gone:
        session.execute(delete(DoraDay).where(DoraDay.profile.in_(gone)))
        session.execute(delete(DoraSummary).where(DoraSummary.profile.in_(gone)))
    taken = session.scalar(select(func.min(DoraSummary.last_mark_id)))
    if taken:
        session.execute(delete(DoraMark).where(DoraMark.id <= taken))
        if not session.scalar(select(func.count()).select_from(DoraMark)):
            # Every profile took every mark in. SQLite numbers the next row of an emptied
            # table 1 again, below every last_mark_id: count from 0, or it would be missed.
            session.execute(update(DoraSummary).values(last_mark_id=0))


def _instant(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
