"""Incidents: production failures, opened by a failed production check (engine.outcomes), by an
Alertmanager alert (sources.alertmanager) or by a person (API, CLI), and resolved by a restore.

Each change is one transaction with its event (``incident.opened``, ``incident.updated``,
``incident.resolved``, each with its ``actor``) and its outbox notices, like every other state
change (decision 0003). Every function here reads and writes the store only.

Alertmanager's alerts reach these functions through engine.alerts (deduplicated by
fingerprint); which deployment an incident is blamed on, and when service was restored, are
worked out by engine.attribution.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy_states import IncidentStatus, check_transition
from conveyor.engine.attribution import (
    PRODUCTION,
    Attribution,
    attribute_by_window,
    attribution_window,
    explicit_commit,
    explicit_deployment,
    explicit_release,
    recovery_of,
)
from conveyor.engine.notices import queue_notices
from conveyor.engine.promotion import notify, pipeline_of, service_named, version_of
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType, NoticeEvent
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    Deployment,
    EnvironmentState,
    Incident,
    Release,
    Service,
    utcnow,
)

MANUAL_SOURCE = "manual"
# A person's clock may run a little ahead of the server's; beyond this, "in the future" is a slip.
CLOCK_SKEW = dt.timedelta(minutes=5)


class IncidentConflict(ConveyorError):
    """The incident is not in a state that allows this (e.g. it was resolved already)."""


# --- opening and resolving -------------------------------------------------------------------


def _latest_release(session: Session, service_id: int) -> Release | None:
    return session.scalar(
        select(Release).where(Release.service_id == service_id).order_by(Release.id.desc())
    )


def _notify(w: Writer, incident: Incident, event: NoticeEvent, summary: str) -> None:
    """Tell whoever the service's pipeline file says listens for ``event``: through the
    attributed deployment (its release's file), else through the newest release's file."""
    dep = w.session.get(Deployment, incident.deployment_id) if incident.deployment_id else None
    release = dep.release if dep is not None else _latest_release(w.session, incident.service_id)
    if release is None:
        return
    try:
        pipeline = pipeline_of(release.run)
    except ValidationError:  # a release recorded without a usable file notifies no one
        return
    if dep is not None:
        notify(w, dep, event, summary, incident_id=incident.id)
        return
    queue_notices(
        w,
        pipeline,
        service_id=incident.service_id,
        event=event,
        service=incident.service.name,
        summary=summary,
        environment=incident.environment,
        incident_id=incident.id,
    )


def open_incident(
    w: Writer,
    *,
    service_id: int,
    environment: str | None,
    title: str,
    source: str,
    deployment: Deployment | None = None,
    fingerprint: str | None = None,
    data: dict[str, Any] | None = None,
    opened_at: dt.datetime | None = None,
    attribution: Attribution | None = None,
    actor: str = "conveyor",
) -> Incident:
    """Open an incident in the caller's transaction. ``deployment`` (a failed deployment that
    opens its own incident) is an explicit attribution."""
    if attribution is None:
        attribution = (
            Attribution(
                "explicit",
                f"opened by the failure of deployment {deployment.id}",
                deployment.id,
                deployment.release_id,
            )
            if deployment is not None
            else Attribution("none", "no deployment named")
        )
    incident = Incident(
        service_id=service_id,
        environment=environment,
        status=IncidentStatus.OPEN,
        title=title,
        source=source,
        deployment_id=attribution.deployment_id,
        release_id=attribution.release_id,
        fingerprint=fingerprint,
        opened_at=opened_at or utcnow(),
        data={**(data or {}), "attribution": attribution.as_data()},
    )
    w.session.add(incident)
    w.session.flush()
    service = w.session.get(Service, service_id)
    assert service is not None
    w.emit(
        EventType.INCIDENT_OPENED,
        service=service.name,
        incident=incident.id,
        environment=environment,
        deployment=incident.deployment_id,
        release=incident.release_id,
        title=title,
        source=source,
        opened_at=incident.opened_at.isoformat(),
        attribution=attribution.how,
        actor=actor,
    )
    _notify(w, incident, NoticeEvent.INCIDENT_OPENED, title)
    return incident


def resolve_incident(
    w: Writer,
    incident: Incident,
    by: str,
    *,
    at: dt.datetime | None = None,
    actor: str = "conveyor",
) -> None:
    """Resolve in the caller's transaction, at ``at`` (default now; never before it opened),
    recording its recovery time. ``by`` says what resolved it, in words."""
    check_transition("incident", IncidentStatus(incident.status), IncidentStatus.RESOLVED)
    at = max(at or utcnow(), incident.opened_at)
    recovery = recovery_of(w.session, incident, at)
    incident.status, incident.resolved_at, incident.resolved_by = IncidentStatus.RESOLVED, at, by
    incident.data = {**incident.data, "recovery": recovery}
    emit_about(
        w,
        EventType.INCIDENT_RESOLVED,
        incident,
        resolved_by=by,
        resolved_at=at.isoformat(),
        recovery_seconds=recovery["seconds"] if recovery else None,
        restored_by=recovery["restored_by"] if recovery else None,
        actor=actor,
    )
    _notify(w, incident, NoticeEvent.INCIDENT_RESOLVED, f"{incident.title} — resolved: {by}")


def emit_about(w: Writer, type_: EventType, incident: Incident, **data: Any) -> None:
    """An event about a stored incident: its service, id and environment, then ``data``."""
    w.emit(
        type_,
        service=incident.service.name,
        incident=incident.id,
        environment=incident.environment,
        **data,
    )


def environment_of(
    session: Session, service: Service, given: str | None
) -> tuple[str | None, str | None]:
    """(environment, None), or (None, why the alert cannot be placed)."""
    tiers: dict[str, str] = {}
    release = _latest_release(session, service.id)
    if release is not None:
        try:
            for env_name, config in pipeline_of(release.run).environments.items():
                tiers[env_name] = config.tier or "staging"
        except ValidationError:
            pass
    for env_name, tier in session.execute(
        select(EnvironmentState.name, EnvironmentState.tier).where(
            EnvironmentState.service_id == service.id
        )
    ):
        tiers[env_name] = tier
    if given is not None:
        if tiers and given not in tiers:
            return None, (
                f"service {service.name} has no environment {given!r} "
                f"(it has: {', '.join(sorted(tiers))})"
            )
        return given, None
    production = sorted(n for n, t in tiers.items() if t == PRODUCTION)
    if PRODUCTION in production:
        return PRODUCTION, None
    return (production[0] if production else None), None


# --- what people ask for ----------------------------------------------------------------------


def _check_time(at: dt.datetime | None, now: dt.datetime, what: str) -> dt.datetime:
    if at is None:
        return now
    if at.tzinfo is None:
        raise ConveyorError(f"{what} needs a time zone (e.g. 2024-05-01T10:00:00Z)")
    if at > now + CLOCK_SKEW:
        raise ConveyorError(f"{what} {at.isoformat()} is in the future")
    return min(at.astimezone(dt.UTC), now)


def open_reported(
    store: Store,
    *,
    service: str,
    title: str,
    actor: str,
    environment: str | None = None,
    deployment: int | None = None,
    release: int | None = None,
    commit: str | None = None,
    at: dt.datetime | None = None,
    window: dt.timedelta | None = None,
) -> int:
    """A person opens an incident (API, CLI); returns its id. At most one of ``deployment``,
    ``release``, ``commit`` attributes it explicitly; without any, the window does."""
    if sum(x is not None for x in (deployment, release, commit)) > 1:
        raise ConveyorError("name at most one of deployment, release and commit")
    title = title.strip()
    if not title:
        raise ConveyorError("an incident needs a title")
    now = utcnow()
    began = _check_time(at, now, "the start time")
    window = attribution_window() if window is None else window
    with store.write() as w:
        svc = service_named(w, service)
        if deployment is not None:
            attribution = explicit_deployment(w.session, svc, deployment, "named by " + actor)
            dep = w.session.get(Deployment, deployment)
            assert dep is not None
            if environment is not None and environment != dep.environment:
                raise ConveyorError(
                    f"deployment {deployment} went to {dep.environment}, not {environment}"
                )
            environment = dep.environment
        else:
            environment, problem = environment_of(w.session, svc, environment)
            if problem is not None:
                raise NotFound(problem)
            if release is not None:
                attribution = explicit_release(
                    w.session, svc, environment, release, "named by " + actor
                )
            elif commit is not None:
                attribution = explicit_commit(
                    w.session, svc, environment, commit, "named by " + actor
                )
            else:
                attribution = attribute_by_window(w.session, svc.id, environment, began, window)
        incident = open_incident(
            w,
            service_id=svc.id,
            environment=environment,
            title=title,
            source=MANUAL_SOURCE,
            opened_at=began,
            attribution=attribution,
            actor=actor,
        )
        return incident.id


def resolve_reported(
    store: Store,
    incident_id: int,
    *,
    actor: str,
    at: dt.datetime | None = None,
    reason: str | None = None,
) -> None:
    """A person resolves an incident (API, CLI)."""
    now = utcnow()
    when = _check_time(at, now, "the resolution time")
    with store.write() as w:
        incident = w.session.get(Incident, incident_id, with_for_update=True)
        if incident is None:
            raise NotFound(f"there is no incident {incident_id}")
        if incident.status != IncidentStatus.OPEN:
            raise IncidentConflict(
                f"incident {incident_id} was resolved already "
                f"({incident.resolved_by or 'no reason given'})"
            )
        if when < incident.opened_at:
            raise ConveyorError(
                f"incident {incident_id} opened at {incident.opened_at.isoformat()}; it cannot "
                "be resolved before that"
            )
        reason = (reason or "").strip()
        resolve_incident(
            w, incident, f"{actor}: {reason}" if reason else f"by {actor}", at=when, actor=actor
        )


# --- read models ------------------------------------------------------------------------------


def _as_time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def incident_detail(store: Store, incident_id: int) -> dict[str, Any]:
    """One incident with its attribution, recovery and the alert behind it (JSON-ready)."""
    with store.session() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFound(f"there is no incident {incident_id}")
        return describe(session, incident)


def describe(session: Session, incident: Incident) -> dict[str, Any]:
    release = session.get(Release, incident.release_id) if incident.release_id else None
    recovery = incident.data.get("recovery")
    if incident.status == IncidentStatus.OPEN:
        # Not final: a rollback may have restored service while the incident stays open.
        recovery = recovery_of(session, incident, None)
    attribution = incident.data.get("attribution") or {
        "how": "explicit" if incident.deployment_id else "none",
        "detail": "",
    }
    return {
        "id": incident.id,
        "service": incident.service.name,
        "environment": incident.environment,
        "status": incident.status,
        "title": incident.title,
        "source": incident.source,
        "deployment": incident.deployment_id,
        "release": incident.release_id,
        "version": version_of(release) if release else None,
        "fingerprint": incident.fingerprint,
        "opened_at": incident.opened_at,
        "resolved_at": incident.resolved_at,
        "resolved_by": incident.resolved_by,
        "attribution": attribution,
        "restored_at": _as_time(recovery.get("restored_at")) if recovery else None,
        "restored_by": recovery.get("restored_by") if recovery else None,
        "recovery_seconds": recovery.get("seconds") if recovery else None,
        "alert": incident.data.get("alert"),
    }
