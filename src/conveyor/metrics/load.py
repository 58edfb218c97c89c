"""Reading what DORA needs from the store, for one window, in a handful of queries.

The engine (metrics.dora) needs more than the deployments of the window:
- the previous window's (for trends), and an attribution window's worth before both (an
  incident at the start of the window is blamed on a deployment just before it);
- the last successful deployment of each (service, environment) before all that, so a first
  deployment is told from one that merely came after a quiet month;
- an attribution window's worth after the window (incidents and rollbacks of its last
  deployments), and the first healthy deployment after that (a restore of its failures);
- deployments named by rollbacks and incidents; incidents open during the span.

Deployments and commits come back as plain tuples with their times already turned into epoch
seconds by the database (julianday on SQLite, extract(epoch) on PostgreSQL): no per-row objects,
no per-value conversion in Python. The commits come ordered by deployment, which is what the
engine's bisect wants.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    union,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from conveyor.facts import IncidentFact
from conveyor.metrics.dora import (
    ENV,
    KEY,
    RID,
    ROLLBACK_OF,
    SERVICE,
    Commit,
    DoraReport,
    Facts,
    Row,
    Settings,
    Window,
    compute_facts,
)
from conveyor.metrics.imports import SOURCE as IMPORTED
from conveyor.store.db import Store
from conveyor.store.models import (
    ChangeFactRow,
    Deployment,
    DeploymentFactRow,
    EnvironmentState,
    Incident,
    Release,
    Service,
)

F = DeploymentFactRow
# Deployment statuses that take a release out of work in progress.
DROPPED = ("rejected", "superseded")
CHUNK = 500
log = logging.getLogger("conveyor.metrics")


def report(
    store: Store, window: Window, settings: Settings, *, summarise: bool = True
) -> DoraReport:
    """The report of ``window``: added up from the summary (metrics.summary), or, to explain
    the figures (or where the store cannot be written), computed from the facts. Unless
    ``summarise``, a profile not summarised yet (after an upgrade, a new time zone) is not
    summarised now: this report is computed from the window's facts and the server's
    background service summarises the profile."""
    from conveyor.metrics.fit import fit_window

    window = fit_window(store, window, settings)
    if not settings.explain and settings.services is None:  # the summary knows no groups
        from conveyor.metrics import summary

        try:
            answer = summary.report(store, window, settings, summarise=summarise)
            if answer is not None:
                return answer
        except OperationalError as exc:  # e.g. a read-only data directory
            log.warning("the DORA summary cannot be brought up to date (%s); reading facts", exc)
    return engine_report(store, window, settings)


def engine_report(store: Store, window: Window, settings: Settings) -> DoraReport:
    """Load the facts ``window`` needs and compute the report."""
    return compute_facts(load_facts(store, window, settings), window, settings)


def _epoch(session: Session, value: Any) -> ColumnElement[float]:
    """Epoch seconds of a datetime column, computed by the database. On SQLite (stored as
    "YYYY-MM-DD HH:MM:SS.ffffff") whole seconds plus the fraction as written: exact, and
    cheaper than julianday arithmetic."""
    if session.get_bind().dialect.name == "sqlite":
        whole: ColumnElement[Any]
        if sqlite3.sqlite_version_info >= (3, 38):
            whole = func.unixepoch(value)
        else:  # pragma: no cover (older SQLite)
            whole = cast(func.strftime("%s", value), Integer)
        return type_coerce(whole + func.substr(value, 20), Float)
    return cast(func.extract("epoch", value), Float)


def _columns(session: Session, window_start: dt.datetime) -> list[Any]:
    """A deployment row, in metrics.dora's layout. The engine never reads the deployed commit:
    it is left out (a quarter of the reading time). Stage points stay JSON, read when needed:
    only for deployments that finished in the span (the split is tallied per day)."""
    return [
        F.id,
        F.key,
        F.service,
        F.environment,
        F.kind,
        F.result,
        null(),
        _epoch(session, F.started_at),
        _epoch(session, F.finished_at),
        _epoch(session, F.failed_at),
        F.rollback_of,
        F.fixes_incident,
        case((F.finished_at >= window_start, F.stages), else_=None),
        _epoch(session, F.served_at),
    ]


def _rows(session: Session, stmt: Any) -> list[Row]:
    """Plain tuples straight from the driver's cursor: the columns are already what the engine
    wants, and skipping result rows saves a second per million."""
    result = session.connection().execute(stmt)
    cursor = result.cursor
    assert cursor is not None
    rows: list[Row] = list(cursor.fetchall())
    result.close()
    return rows


def _scope(settings: Settings) -> list[ColumnElement[bool]]:
    where = [F.tier == settings.tier]
    if settings.service:
        where.append(F.service == settings.service)
    if settings.services is not None:
        where.append(F.service.in_(sorted(settings.services)))
    return where


def load_facts(store: Store, window: Window, settings: Settings, *, wip: bool = True) -> Facts:
    """Everything compute_facts needs for ``window`` (see the module docstring)."""
    with store.session() as session:
        return facts_from(session, window, settings, wip=wip)


def facts_from(session: Session, window: Window, settings: Settings, *, wip: bool = True) -> Facts:
    """load_facts in an open session."""
    span = window.previous() if settings.compare else window
    # Before the span: the attribution window (incidents blamed on deployments before it) and
    # the look-back (a commit brought there by another environment is not counted again).
    lo = _utc(span.instant(span.start)) - max(settings.attribution_window, settings.look_back)
    hi = _utc(window.instant(window.end)) + settings.attribution_window
    cols = _columns(session, _utc(span.instant(span.start)))
    in_range = [*_scope(settings), F.finished_at >= lo, F.finished_at < hi]
    # In finish order (the index's): the engine's sort then finds them sorted.
    rows = _rows(session, select(*cols).where(*in_range).order_by(F.finished_at))
    keys = {r[KEY] for r in rows}
    incidents, named = _incidents(session, settings, lo, hi, in_range)
    # The last success before the range (tells a first deployment from a later one) and
    # the first healthy deployment after it (a restore), per (service, environment).
    pairs = sorted({(r[SERVICE], r[ENV]): r[RID] for r in rows}.values())
    extra = _edge(session, cols, settings, pairs, lo, before=True)
    extra += _edge(session, cols, settings, pairs, hi, before=False)
    # And the last deployment before the range, whatever its result: a failure not restored
    # until a deployment in range makes that one a fix-forward (rework, docs/metrics.md).
    extra += _edge(session, cols, settings, pairs, lo, before=True, any_result=True)
    named |= {r[ROLLBACK_OF] for r in rows if r[ROLLBACK_OF]}
    wanted = sorted(named - keys - {r[KEY] for r in extra})
    for i in range(0, len(wanted), CHUNK):
        chunk = select(*cols).where(*_scope(settings), F.key.in_(wanted[i : i + CHUNK]))
        extra += _rows(session, chunk)
    seen = set(keys)
    for r in extra:
        if r[KEY] not in seen:
            seen.add(r[KEY])
            rows.append(r)
    envs: dict[str, set[str]] = {}
    for r in rows:
        envs.setdefault(r[SERVICE], set()).add(r[ENV])
    # Commit ids are needed to count a commit once across environments, and to show them.
    shas = settings.explain or any(len(e) > 1 for e in envs.values())
    commits = _commits(session, settings, in_range, shas)
    env_tiers = _env_tiers(session, incidents)
    progress = work_in_progress(session, settings) if wip else None
    return Facts(rows, commits, incidents, env_tiers, progress)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _edge(
    session: Session,
    cols: list[Any],
    settings: Settings,
    pairs: list[int],
    bound: dt.datetime,
    *,
    before: bool,
    any_result: bool = False,
) -> list[Row]:
    """For the (service, environment) of each deployment in ``pairs`` (one per pair), its
    nearest successful deployment beyond ``bound``: the latest (non-rollback) one before, or
    the first one after. One statement per thousand pairs; each lookup walks the
    (service, finished_at) index."""
    found: list[Row] = []
    for i in range(0, len(pairs), 1000):
        chunk = select(F.service, F.environment).where(F.id.in_(pairs[i : i + 1000])).subquery()
        nearest = _nearest(chunk, settings, bound, before, any_result)
        found += _rows(session, select(*cols).where(F.id.in_(nearest)))
    return found


def _nearest(
    table: Any, settings: Settings, bound: dt.datetime, before: bool, any_result: bool = False
) -> Any:
    """The id of the nearest success (``any_result``: deployment) beyond ``bound`` for each
    row of ``table``."""
    g = aliased(F)
    where = [
        g.service == table.c.service,
        g.environment == table.c.environment,
        g.tier == settings.tier,
    ]
    if any_result:
        where.append(g.finished_at < bound)
    elif before:
        where += [g.result == "succeeded", g.kind == "deploy", g.finished_at < bound]
    else:
        where += [g.result == "succeeded", g.finished_at >= bound]
    nearest = (
        select(g.id)
        .where(*where)
        .order_by(g.finished_at.desc() if before else g.finished_at.asc())
        .limit(1)
        .scalar_subquery()
    )
    return select(nearest).select_from(table)


def _commits(session: Session, settings: Settings, in_range: list[Any], shas: bool) -> list[Commit]:
    """The commits of the successful deployments in range, ordered by deployment, timed from
    the chosen start (the committer date where the author date or first-seen time is unknown);
    without their ids unless ``shas`` (a fifth of the memory, on millions of commits)."""
    c = ChangeFactRow
    start = {"authored": c.authored_at, "seen": c.seen_at}.get(settings.lead_time_from)
    when = func.coalesce(start, c.committed_at) if start is not None else c.committed_at
    ok = select(F.id).where(*in_range, F.kind == "deploy", F.result == "succeeded")
    stmt = (
        select(c.fact_id, _epoch(session, when), c.sha if shas else literal(""))
        .where(c.fact_id.in_(ok))
        .order_by(c.fact_id, c.id)
    )
    return _rows(session, stmt)


def _incidents(
    session: Session, settings: Settings, lo: dt.datetime, hi: dt.datetime, in_range: list[Any]
) -> tuple[list[IncidentFact], set[str]]:
    """Incidents open at some point of [lo, hi), or naming a deployment in range; and the keys
    of the deployments they name. An incident naming a release or a commit names the latest
    deployment of it (in the tier) before it opened."""
    i = Incident
    scope: list[ColumnElement[bool]] = []
    if settings.service:
        # By id, so that each part below walks the (service, time) indexes.
        scope.append(i.service_id.in_(select(Service.id).where(Service.name == settings.service)))
    own = select(F.deployment_id).where(*in_range, F.deployment_id.is_not(None))
    keys = select(F.key).where(*in_range)
    # One index range each (an OR of them would read the table whole): opened in [lo, hi);
    # opened before lo and resolved from lo on, or not resolved; naming one of Conveyor's
    # deployments in range; imported ones naming a deployment in range by its key, whenever
    # they opened.
    parts = [
        select(i.id).where(*scope, i.opened_at >= lo, i.opened_at < hi),
        select(i.id).where(*scope, i.resolved_at >= lo, i.opened_at < lo),
        select(i.id).where(*scope, i.resolved_at.is_(None), i.opened_at < lo),
        select(i.id).where(*scope, i.deployment_id.in_(own)),
        select(i.id).where(*scope, i.deployment_key.in_(keys)),
    ]
    ids = union(*parts).subquery()
    stmt = (
        select(i, Service.name)
        .join(Service, Service.id == i.service_id)
        .where(i.id.in_(select(ids.c.id)))
        .order_by(i.id)
    )
    loaded = [(inc, service) for inc, service in session.execute(stmt)]
    found, named = [], set()
    for inc, service in loaded + _overlapping(session, loaded, hi):
        key = _named(session, settings, inc, service)
        if key:
            named.add(key)
        found.append(
            IncidentFact(
                id=incident_label(inc),
                service=service,
                opened_at=inc.opened_at,
                resolved_at=inc.resolved_at,
                environment=inc.environment,
                deployment=key,
                title=inc.title,
                ref=str(inc.id),
            )
        )
    return found, named


def incident_label(inc: Incident) -> str:
    """An incident as a person knows it: an imported one by its own id (its external id is
    "<service>:<id>"), Conveyor's by its number."""
    if inc.source == IMPORTED and inc.external_id:
        return inc.external_id.split(":", 1)[1]
    return str(inc.id)


def _overlapping(
    session: Session, loaded: list[tuple[Incident, str]], hi: dt.datetime
) -> list[tuple[Incident, str]]:
    """Incidents opened from ``hi`` on while one loaded of the same service was still open
    (and so on): overlapping incidents of a service are one outage, wherever a span ends."""
    reach: dict[str, dt.datetime | None] = {}
    for inc, service in loaded:
        if service not in reach or reach[service] is not None:
            end = inc.resolved_at
            reach[service] = None if end is None else max(end, reach.get(service) or end)
    open_past = {s for s, end in reach.items() if end is None or end > hi}
    if not open_past:
        return []
    later = session.execute(
        select(Incident, Service.name)
        .join(Service, Service.id == Incident.service_id)
        .where(
            Incident.service_id.in_(select(Service.id).where(Service.name.in_(sorted(open_past)))),
            Incident.opened_at >= hi,
        )
        .order_by(Incident.opened_at, Incident.id)
    )
    more = []
    for inc, service in later:
        end = reach[service]
        if end is not None and inc.opened_at >= end:
            continue
        more.append((inc, service))
        reach[service] = (
            None if end is None or inc.resolved_at is None else max(end, inc.resolved_at)
        )
    return more


def _named(session: Session, settings: Settings, inc: Incident, service: str) -> str | None:
    """The deployment fact an incident names explicitly: its deployment (Conveyor's, or an
    imported one's key), else the latest deployment of its release or commit before it opened.
    An attribution Conveyor recorded by window is not explicit: DORA applies the window itself
    (with --attribution-window), to its own and to imported history alike."""
    data = inc.data or {}
    if (data.get("attribution") or {}).get("how") == "window":
        return None  # recorded by window when it opened: the engine applies its own window
    if inc.deployment_id is not None:
        return f"c{inc.deployment_id}"
    if inc.deployment_key:  # an imported incident's resolved attribution
        return inc.deployment_key
    where: list[Any] = [
        F.service == service,
        F.tier == settings.tier,
        F.finished_at <= inc.opened_at,
    ]
    if inc.release_id is not None:
        ids = select(Deployment.id).where(Deployment.release_id == inc.release_id)
        where.append(F.deployment_id.in_(ids))
    elif isinstance(data.get("commit"), str) and data["commit"]:
        where.append(F.sha.startswith(data["commit"]))
    else:
        return None
    return session.scalar(select(F.key).where(*where).order_by(F.finished_at.desc()).limit(1))


def _env_tiers(session: Session, incidents: Iterable[IncidentFact]) -> dict[tuple[str, str], str]:
    """The tier of each environment an incident names (from the environments Conveyor runs,
    else from deployment facts, imported ones included)."""
    tiers: dict[tuple[str, str], str] = {}
    for service, env in sorted({(i.service, i.environment) for i in incidents if i.environment}):
        tier = session.scalar(
            select(EnvironmentState.tier)
            .join(Service, Service.id == EnvironmentState.service_id)
            .where(Service.name == service, EnvironmentState.name == env)
        ) or session.scalar(
            select(F.tier).where(F.service == service, F.environment == env).limit(1)
        )
        if tier:
            tiers[(service, env)] = tier
    return tiers


def work_in_progress(session: Session, settings: Settings) -> dict[str, Any]:
    """Work in progress of the settings' scope (see _work_in_progress_rows)."""
    return _wip_summary(_work_in_progress_rows(session, settings), settings.tier)


def work_in_progress_by_service(
    session: Session, settings: Settings, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Work in progress of each of ``names``, from the one statement of the settings' scope."""
    rows: dict[str, list[Row]] = {n: [] for n in names}
    for row in _work_in_progress_rows(session, settings):
        if row[1] in rows:
            rows[row[1]].append(row)
    return {n: _wip_summary(found, settings.tier) for n, found in rows.items()}


def _work_in_progress_rows(session: Session, settings: Settings) -> list[Row]:
    """Releases built but not yet in the tier (docs/metrics.md, "Work in progress"): newer
    than the newest release that succeeded there (older ones never deployed were skipped, not
    waiting), neither rejected nor superseded, each by the furthest environment it reached (its
    latest successful deployment), or "built".

    One statement, set-based: each service's newest release in the tier (one index seek per
    service), its releases past that (an index range), their deployments (by release), and
    the newest release that succeeded in each environment of those services (a range of the
    (service, status, environment, release) index); no statement per release."""
    d = Deployment
    in_tier = (
        select(func.coalesce(func.max(d.release_id), 0))
        .where(
            d.service_id == Service.id,
            d.tier == settings.tier,
            d.status == "succeeded",
            d.kind == "deploy",
        )
        .scalar_subquery()
    )
    services = select(Service.id, Service.name, in_tier.label("newest"))
    if settings.service:
        services = services.where(Service.name == settings.service)
    elif settings.services is not None:
        services = services.where(Service.name.in_(sorted(settings.services)))
    svc = services.cte("wip_services")
    candidates = (
        select(Release.id, Release.service_id, svc.c.name, Release.sha, Release.created_at)
        .join(svc, and_(Release.service_id == svc.c.id, Release.id > svc.c.newest))
        .cte("wip_releases")
    )
    theirs = (
        select(d.release_id, d.environment, d.status, d.finished_at, d.id)
        .join(candidates, d.release_id == candidates.c.id)
        .cte("wip_deployments")
    )
    order = (theirs.c.finished_at.desc(), theirs.c.id.desc())
    reached = (
        select(
            theirs.c.release_id,
            theirs.c.environment,
            func.row_number().over(partition_by=theirs.c.release_id, order_by=order).label("n"),
        )
        .where(theirs.c.status == "succeeded")
        .subquery("reached")
    )
    # Taken out of the queue: an approval refused or timed out ("rejected"), or a newer
    # release took its place in an environment's queue ("superseded").
    dropped = select(theirs.c.release_id).where(theirs.c.status.in_(DROPPED))
    newest = (
        select(d.service_id, d.environment, func.max(d.release_id).label("release_id"))
        .where(d.service_id.in_(select(candidates.c.service_id)), d.status == "succeeded")
        .group_by(d.service_id, d.environment)
        .cte("wip_newest")
    )
    anywhere = (
        select(newest.c.service_id, func.max(newest.c.release_id).label("release_id"))
        .group_by(newest.c.service_id)
        .subquery("anywhere")
    )
    there = newest.alias("there")
    # Superseded: a newer release succeeded in the environment this one reached (it replaced
    # it there), or, for one deployed nowhere, anywhere (it was skipped).
    replaced_by = case(
        (reached.c.environment.is_(None), anywhere.c.release_id), else_=there.c.release_id
    )
    c = candidates.c
    stmt = (
        select(c.id, c.name, c.sha, c.created_at, reached.c.environment)
        .select_from(candidates)
        .outerjoin(reached, and_(reached.c.release_id == c.id, reached.c.n == 1))
        .outerjoin(
            there,
            and_(there.c.service_id == c.service_id, there.c.environment == reached.c.environment),
        )
        .outerjoin(anywhere, anywhere.c.service_id == c.service_id)
        .where(c.id.not_in(dropped), func.coalesce(replaced_by, 0) <= c.id)
        .order_by(c.id)
    )
    return [tuple(row) for row in session.execute(stmt)]


def _wip_summary(rows: Iterable[Row], tier: str) -> dict[str, Any]:
    """Work in progress as the report shows it, from release rows in release order."""
    by_env: dict[str, int] = {}
    by_service: dict[str, int] = {}
    releases = []
    for rid, service, sha, created, env in rows:
        where = env or "built"
        by_env[where] = by_env.get(where, 0) + 1
        by_service[service] = by_service.get(service, 0) + 1
        releases.append(
            {
                "kind": "release",
                "id": str(rid),
                "service": service,
                "time": created.isoformat().replace("+00:00", "Z"),
                "value": None,
                "how": f"in {env}, not yet in {tier}"
                if env
                else f"built ({sha[:12]}), not deployed yet",
            }
        )
    return {
        "total": len(releases),
        "by_environment": dict(sorted(by_env.items())),
        "by_service": dict(sorted(by_service.items())),
        "releases": releases,
    }
