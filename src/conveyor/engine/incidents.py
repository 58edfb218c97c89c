"""Incidents: production failures, opened by a failed production check (engine.outcomes), by an
Alertmanager alert (sources.alertmanager) or by a person (API, CLI), and resolved by a restore.

Each change is one transaction with its event (``incident.opened``, ``incident.updated``,
``incident.resolved``, each with its ``actor``) and its outbox notices, like every other state
change (decision 0003). Every function here reads and writes the store only.

Alerts are deduplicated by Alertmanager's fingerprint (a hash of the alert's label set), so
Alertmanager's repeats and redeliveries change nothing:

- firing, and an incident with that fingerprint is open: the incident is updated (title,
  labels, annotations) if any of that changed, else nothing happens;
- firing, none open: a new incident opens, unless this very occurrence of the alert (same
  fingerprint and start time) was resolved already (a late redelivery);
- resolved: the open incident with that fingerprint is resolved at the alert's end time. A
  resolved alert whose firing was never received (Conveyor was down) opens and resolves its
  incident at once, so its recovery time is still counted.

The service is the alert's ``service`` label (CONVEYOR_ALERT_SERVICE_LABEL names another), the
environment its ``environment`` or ``env`` label, by default the service's production-tier
environment. An alert Conveyor cannot place (no such label, unknown service or environment) is
recorded as ignored with the reason (a ``deliveries`` row and an ``alert.ignored`` event) and
changes nothing else.

Attribution (design §6) ties an incident to the deployment that caused it:

- explicit: the alert's ``deployment`` label or annotation, or the ``deployment``, ``release``
  or ``commit`` a person gives;
- by window: the deployment of the service that was serving the incident's production-tier
  environment when the incident began, if it began within CONVEYOR_ATTRIBUTION_HOURS (48 by
  default) after that deployment finished;
- otherwise none: the incident counts for recovery time, not for change failure rate.

How it was attributed is kept on the incident (``data.attribution``), so DORA can explain it.

Recovery: when an incident is resolved, the time service was restored is recorded in
``data.recovery``: the first healthy rollback of its environment after it opened, or its
resolution, whichever came first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.engine.deploy_states import DeploymentStatus, IncidentStatus, check_transition
from conveyor.engine.notices import queue_notices
from conveyor.engine.promotion import notify, pipeline_of, service_named, version_of
from conveyor.errors import ConveyorError, NotFound
from conveyor.sources.alertmanager import Alert, AlertNotification
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    ChangeFactRow,
    Delivery,
    Deployment,
    DeploymentFactRow,
    EnvironmentState,
    Incident,
    Release,
    Service,
    utcnow,
)

log = logging.getLogger("conveyor.incidents")

ALERT_SOURCE = "alertmanager"
MANUAL_SOURCE = "manual"
PRODUCTION = "production"
SERVICE_LABEL_ENV = "CONVEYOR_ALERT_SERVICE_LABEL"
ATTRIBUTION_HOURS_ENV = "CONVEYOR_ATTRIBUTION_HOURS"
DEFAULT_SERVICE_LABEL = "service"
DEFAULT_ATTRIBUTION_HOURS = 48.0
ENVIRONMENT_LABELS = ("environment", "env")
# A person's clock may run a little ahead of the server's; beyond this, "in the future" is a slip.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Start times of the occurrences of an alert merged into one incident, kept for deduplication.
MAX_STARTS = 50
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")

D = DeploymentStatus
Outcome = Literal["opened", "updated", "unchanged", "resolved", "ignored"]


class IncidentConflict(ConveyorError):
    """The incident is not in a state that allows this (e.g. it was resolved already)."""


# --- settings ---------------------------------------------------------------------------------


def service_label() -> str:
    """The alert label that names the Conveyor service (CONVEYOR_ALERT_SERVICE_LABEL)."""
    value = os.environ.get(SERVICE_LABEL_ENV, "").strip() or DEFAULT_SERVICE_LABEL
    if not _LABEL_NAME.match(value):
        raise ConveyorError(
            f"{SERVICE_LABEL_ENV}={value!r} is not a Prometheus label name",
            hint="e.g. service, app or job",
        )
    return value


def attribution_window() -> dt.timedelta:
    """How long after a deployment finished an incident is still blamed on it by window."""
    raw = os.environ.get(ATTRIBUTION_HOURS_ENV, "").strip()
    if not raw:
        return dt.timedelta(hours=DEFAULT_ATTRIBUTION_HOURS)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not 0 < hours < 24 * 366 * 10:
        raise ConveyorError(
            f"{ATTRIBUTION_HOURS_ENV}={raw!r} is not a number of hours greater than 0",
            hint=f"the default is {DEFAULT_ATTRIBUTION_HOURS:g}",
        )
    return dt.timedelta(hours=hours)


# --- attribution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Which deployment (and release) an incident is blamed on, how, and why, in words."""

    how: Literal["explicit", "window", "none"]
    detail: str
    deployment_id: int | None = None
    release_id: int | None = None

    def as_data(self) -> dict[str, Any]:
        return {"how": self.how, "detail": self.detail}


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def _env_tier(session: Session, service_id: int, environment: str) -> str | None:
    return session.scalar(
        select(EnvironmentState.tier).where(
            EnvironmentState.service_id == service_id, EnvironmentState.name == environment
        )
    )


def attribute_by_window(
    session: Session,
    service_id: int,
    environment: str | None,
    began: dt.datetime,
    window: dt.timedelta,
) -> Attribution:
    """The deployment live in ``environment`` (production tier) when the incident began, if
    it began within ``window`` after that deployment finished."""
    if environment is None:
        return Attribution("none", "the incident names no environment")
    tier = _env_tier(session, service_id, environment)
    if tier is not None and tier != PRODUCTION:
        return Attribution(
            "none", f"{environment} is a {tier}-tier environment; only production is attributed"
        )
    live = session.scalar(
        select(Deployment)
        .where(
            Deployment.service_id == service_id,
            Deployment.environment == environment,
            Deployment.healthy_at.is_not(None),
            Deployment.healthy_at <= began,
        )
        .order_by(Deployment.healthy_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    if live is None:
        return Attribution("none", f"no deployment was serving {environment} when it began")
    if live.tier != PRODUCTION:
        return Attribution(
            "none", f"{environment} is a {live.tier}-tier environment; only production counts"
        )
    what = f"deployment {live.id} ({version_of(live.release)}, {live.kind})"
    if live.finished_at is None or began <= live.finished_at:
        return Attribution(
            "window",
            f"{what} was serving {environment} when it began, before it finished",
            live.id,
            live.release_id,
        )
    after = began - live.finished_at
    if after > window:
        return Attribution(
            "none",
            f"{what} was serving {environment}, but it began {_hours(after)} after that "
            f"deployment finished (the attribution window is {_hours(window)})",
        )
    return Attribution(
        "window",
        f"{what} was serving {environment} when it began, {_hours(after)} after it finished "
        f"(window {_hours(window)})",
        live.id,
        live.release_id,
    )


def _explicit_deployment(
    session: Session, service: Service, deployment_id: int, why: str
) -> Attribution:
    dep = session.get(Deployment, deployment_id)
    if dep is None or dep.service_id != service.id:
        raise NotFound(
            f"there is no deployment {deployment_id} of {service.name}",
            hint=f"`conveyor deployments --service {service.name}` lists them",
        )
    return Attribution(
        "explicit",
        f"{why}: deployment {dep.id} ({version_of(dep.release)} to {dep.environment})",
        dep.id,
        dep.release_id,
    )


def _deployment_of_release(
    session: Session, release: Release, environment: str | None
) -> Deployment | None:
    """The deployment that brought ``release`` to ``environment`` (its first that served)."""
    if environment is None:
        return None
    query = select(Deployment).where(
        Deployment.release_id == release.id,
        Deployment.environment == environment,
        Deployment.kind == "deploy",
    )
    served = session.scalar(
        query.where(Deployment.healthy_at.is_not(None)).order_by(Deployment.id).limit(1)
    )
    return served or session.scalar(query.order_by(Deployment.id.desc()).limit(1))


def _explicit_release(
    session: Session, service: Service, environment: str | None, release_id: int, why: str
) -> Attribution:
    release = session.get(Release, release_id)
    if release is None or release.service_id != service.id:
        raise NotFound(
            f"there is no release {release_id} of {service.name}",
            hint=f"`conveyor releases --service {service.name}` lists them",
        )
    dep = _deployment_of_release(session, release, environment)
    if dep is None:
        where = environment or "any environment"
        return Attribution(
            "explicit",
            f"{why}: release {release.id} ({version_of(release)}), never deployed to {where}",
            None,
            release.id,
        )
    return Attribution(
        "explicit",
        f"{why}: release {release.id} ({version_of(release)}), deployment {dep.id}",
        dep.id,
        release.id,
    )


def _explicit_commit(
    session: Session, service: Service, environment: str | None, commit: str, why: str
) -> Attribution:
    """The deployment that first brought ``commit`` to the environment: a release built from
    it, else a deployment whose commit range (DORA's change facts) holds it."""
    commit = commit.strip().lower()
    if not _COMMIT.match(commit):
        raise ConveyorError(f"{commit!r} is not a commit id (7 to 64 hex digits)")
    releases = session.scalars(
        select(Release)
        .where(Release.service_id == service.id, Release.sha.startswith(commit))
        .order_by(Release.id)
    ).all()
    if len({r.sha for r in releases}) > 1:
        raise ConveyorError(f"commit {commit} is ambiguous: give more of its digits")
    for release in releases:
        dep = _deployment_of_release(session, release, environment)
        if dep is not None:
            return Attribution(
                "explicit",
                f"{why}: commit {commit[:12]} is release {release.id}, deployment {dep.id}",
                dep.id,
                release.id,
            )
    if environment is not None:
        dep_id = session.scalar(
            select(DeploymentFactRow.deployment_id)
            .join(ChangeFactRow, ChangeFactRow.fact_id == DeploymentFactRow.id)
            .where(
                DeploymentFactRow.service == service.name,
                DeploymentFactRow.environment == environment,
                DeploymentFactRow.kind == "deploy",
                DeploymentFactRow.deployment_id.is_not(None),
                ChangeFactRow.sha.startswith(commit),
            )
            .order_by(DeploymentFactRow.finished_at)
            .limit(1)
        )
        dep = session.get(Deployment, dep_id) if dep_id is not None else None
        if dep is not None:
            return Attribution(
                "explicit",
                f"{why}: commit {commit[:12]} reached {environment} with deployment {dep.id}",
                dep.id,
                dep.release_id,
            )
    if releases:
        return Attribution(
            "explicit",
            f"{why}: commit {commit[:12]} is release {releases[0].id}, never deployed to "
            f"{environment or 'any environment'}",
            None,
            releases[0].id,
        )
    raise NotFound(
        f"commit {commit} is in no release or deployment of {service.name}"
        + (f" to {environment}" if environment else "")
    )


# --- opening, updating, resolving -------------------------------------------------------------


def _latest_release(session: Session, service_id: int) -> Release | None:
    return session.scalar(
        select(Release).where(Release.service_id == service_id).order_by(Release.id.desc())
    )


def _notify(w: Writer, incident: Incident, event: str, summary: str) -> None:
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
        "incident.opened",
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
    _notify(w, incident, "incident.opened", title)
    return incident


def recovery_of(
    session: Session, incident: Incident, resolved_at: dt.datetime | None
) -> dict[str, Any] | None:
    """When service was restored: the first healthy rollback of the incident's environment
    after it opened, or ``resolved_at``, whichever came first (None: neither yet)."""
    restored_at, by = resolved_at, "resolved"
    if incident.environment is not None:
        query = select(Deployment).where(
            Deployment.service_id == incident.service_id,
            Deployment.environment == incident.environment,
            Deployment.kind == "rollback",
            Deployment.status != D.FAILED,
            Deployment.healthy_at.is_not(None),
            Deployment.healthy_at >= incident.opened_at,
        )
        if resolved_at is not None:
            query = query.where(Deployment.healthy_at <= resolved_at)
        rollback = session.scalar(query.order_by(Deployment.healthy_at).limit(1))
        if rollback is not None and rollback.healthy_at is not None:
            restored_at, by = rollback.healthy_at, f"rollback deployment {rollback.id}"
    if restored_at is None:
        return None
    return {
        "restored_at": restored_at.isoformat(),
        "restored_by": by,
        "seconds": round((restored_at - incident.opened_at).total_seconds(), 3),
    }


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
    w.emit(
        "incident.resolved",
        service=incident.service.name,
        incident=incident.id,
        environment=incident.environment,
        resolved_by=by,
        resolved_at=at.isoformat(),
        recovery_seconds=recovery["seconds"] if recovery else None,
        restored_by=recovery["restored_by"] if recovery else None,
        actor=actor,
    )
    _notify(w, incident, "incident.resolved", f"{incident.title} — resolved: {by}")


# --- alerts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertOutcome:
    """What one alert of a notification did."""

    fingerprint: str
    alert: str
    status: str
    outcome: Outcome
    incident: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alert": self.alert,
            "status": self.status,
            "outcome": self.outcome,
            "incident": self.incident,
            "reason": self.reason,
        }


def record_alerts(
    store: Store, notification: AlertNotification, *, actor: str
) -> list[AlertOutcome]:
    """Apply each alert of an Alertmanager notification, one transaction per alert: a failure
    part-way leaves the alerts before it applied, and Alertmanager's retry (it retries on 5xx)
    finds them unchanged."""
    label = service_label()
    window = attribution_window()
    return [
        record_alert(store, alert, actor=actor, label=label, window=window)
        for alert in notification.alerts
    ]


def record_alert(
    store: Store,
    alert: Alert,
    *,
    actor: str,
    label: str = DEFAULT_SERVICE_LABEL,
    window: dt.timedelta = dt.timedelta(hours=DEFAULT_ATTRIBUTION_HOURS),
    now: dt.datetime | None = None,
) -> AlertOutcome:
    """Apply one alert in one transaction. A concurrent twin (two Alertmanagers of a cluster
    delivering the same alert) that loses a uniqueness race is tried once more, and then
    finds the other's work done."""
    for attempt in range(2):
        try:
            with store.write() as w:
                return _apply_alert(w, alert, actor, label, window, now or utcnow())
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _apply_alert(
    w: Writer, alert: Alert, actor: str, label: str, window: dt.timedelta, now: dt.datetime
) -> AlertOutcome:
    name = alert.label(label)
    if name is None:
        return _ignore(w, alert, None, f"the alert has no {label!r} label naming a service", actor)
    # Locks the service's row (PostgreSQL): deliveries for one service apply one at a time.
    service = w.session.scalar(select(Service).where(Service.name == name).with_for_update())
    if service is None:
        return _ignore(w, alert, name, f"there is no service {name!r} in Conveyor", actor)
    environment, problem = _environment_of(w.session, service, alert.label(*ENVIRONMENT_LABELS))
    if problem is not None:
        return _ignore(w, alert, name, problem, actor)
    known = w.session.scalars(
        select(Incident)
        .where(
            Incident.service_id == service.id,
            Incident.source == ALERT_SOURCE,
            Incident.fingerprint == alert.fingerprint,
        )
        .order_by(Incident.id)
    ).all()
    current = next((i for i in known if i.status == IncidentStatus.OPEN), None)
    start = alert.starts_at.isoformat()
    seen = next((i for i in known if start in i.data.get("starts", [])), None)

    def outcome(kind: Outcome, incident: Incident | None, why: str | None = None) -> AlertOutcome:
        ident = incident.id if incident else None
        return AlertOutcome(alert.fingerprint, alert.name, alert.status, kind, ident, why)

    if alert.status == "firing":
        if current is not None:
            return outcome(_update(w, current, alert, actor), current)
        if seen is not None:
            return outcome("unchanged", seen, "this occurrence of the alert was resolved already")
        return outcome("opened", _open_alert(w, service, environment, alert, actor, window, now))
    if current is not None:
        _resolve_alert(w, current, alert, actor, now)
        return outcome("resolved", current)
    if seen is not None:
        return outcome("unchanged", seen, "resolved already")
    # The firing never reached us: open it as it was, and resolve it at once.
    incident = _open_alert(w, service, environment, alert, actor, window, now)
    _resolve_alert(w, incident, alert, actor, now)
    return outcome("resolved", incident, "its firing was never received: opened and resolved")


def _environment_of(
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


def _ignore(w: Writer, alert: Alert, service: str | None, reason: str, actor: str) -> AlertOutcome:
    """Record the alert as ignored, once per occurrence and status (a repeat changes nothing)."""
    key = hashlib.sha256(
        f"{alert.fingerprint}\0{alert.status}\0{alert.starts_at.isoformat()}".encode()
    ).hexdigest()
    exists = w.session.scalar(
        select(Delivery.id).where(Delivery.source == ALERT_SOURCE, Delivery.delivery_id == key)
    )
    if exists is None:
        w.session.add(
            Delivery(
                source=ALERT_SOURCE,
                delivery_id=key,
                service=(service or "")[:200],
                received_at=utcnow(),
                status="ignored",
                reason=reason,
                payload={**alert.as_data(), "status": alert.status},
            )
        )
        w.session.flush()
        w.emit(
            "alert.ignored",
            service=service[:200] if service else None,
            fingerprint=alert.fingerprint,
            alert=alert.name,
            status=alert.status,
            reason=reason,
            actor=actor,
        )
        log.warning("alert %s (%s) ignored: %s", alert.name, alert.fingerprint, reason)
    return AlertOutcome(alert.fingerprint, alert.name, alert.status, "ignored", None, reason)


def _open_alert(
    w: Writer,
    service: Service,
    environment: str | None,
    alert: Alert,
    actor: str,
    window: dt.timedelta,
    now: dt.datetime,
) -> Incident:
    began = min(alert.starts_at, now)
    attribution = None
    named = alert.tag("deployment")
    note = ""
    if named is not None:
        if named.isdigit():
            try:
                attribution = _explicit_deployment(
                    w.session, service, int(named), "the alert's deployment label"
                )
            except NotFound as exc:
                note = f"; the alert's deployment {named!r} was not used: {exc.message}"
        else:
            note = f"; the alert's deployment {named!r} is not a deployment id"
    if attribution is None:
        found = attribute_by_window(w.session, service.id, environment, began, window)
        attribution = Attribution(
            found.how, found.detail + note, found.deployment_id, found.release_id
        )
    return open_incident(
        w,
        service_id=service.id,
        environment=environment,
        title=alert.title,
        source=ALERT_SOURCE,
        fingerprint=alert.fingerprint,
        data={"alert": alert.as_data(), "starts": [alert.starts_at.isoformat()]},
        opened_at=began,
        attribution=attribution,
        actor=actor,
    )


def _update(w: Writer, incident: Incident, alert: Alert, actor: str) -> Outcome:
    """A firing alert for its open incident: keep what changed (nothing: unchanged)."""
    before = dict(incident.data.get("alert") or {})
    after = alert.as_data()
    starts = list(incident.data.get("starts", []))
    start = alert.starts_at.isoformat()
    new_start = start not in starts
    changed = [
        key
        for key in ("labels", "annotations", "generator_url")
        if before.get(key) != after.get(key)
    ]
    if incident.title != alert.title:
        changed.append("title")
    if new_start:
        changed.append("starts")
    if not changed:
        return "unchanged"
    incident.title = alert.title
    incident.data = {
        **incident.data,
        "alert": {**after, "starts_at": before.get("starts_at", start)},
        "starts": ([*starts, start] if new_start else starts)[-MAX_STARTS:],
    }
    w.emit(
        "incident.updated",
        service=incident.service.name,
        incident=incident.id,
        environment=incident.environment,
        changed=changed,
        title=incident.title,
        actor=actor,
    )
    return "updated"


def _resolve_alert(
    w: Writer, incident: Incident, alert: Alert, actor: str, now: dt.datetime
) -> None:
    ended = min(alert.ends_at or now, now)
    resolve_incident(
        w, incident, f"alert {alert.name} resolved (Alertmanager)", at=ended, actor=actor
    )


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
    window = attribution_window()
    with store.write() as w:
        svc = service_named(w, service)
        if deployment is not None:
            attribution = _explicit_deployment(w.session, svc, deployment, "named by " + actor)
            dep = w.session.get(Deployment, deployment)
            assert dep is not None
            if environment is not None and environment != dep.environment:
                raise ConveyorError(
                    f"deployment {deployment} went to {dep.environment}, not {environment}"
                )
            environment = dep.environment
        else:
            environment, problem = _environment_of(w.session, svc, environment)
            if problem is not None:
                raise NotFound(problem)
            if release is not None:
                attribution = _explicit_release(
                    w.session, svc, environment, release, "named by " + actor
                )
            elif commit is not None:
                attribution = _explicit_commit(
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


def ignored_alerts(store: Store, limit: int = 100) -> Sequence[dict[str, Any]]:
    """Alerts recorded as ignored, newest first, with the reason (for people wiring up
    Alertmanager: why did my alert open nothing?)."""
    with store.session() as session:
        rows = session.scalars(
            select(Delivery)
            .where(Delivery.source == ALERT_SOURCE)
            .order_by(Delivery.id.desc())
            .limit(limit)
        ).all()
        return [
            {
                "service": d.service or None,
                "alert": d.payload.get("labels", {}).get("alertname"),
                "status": d.payload.get("status"),
                "fingerprint": d.payload.get("fingerprint"),
                "received_at": d.received_at,
                "reason": d.reason,
            }
            for d in rows
        ]
