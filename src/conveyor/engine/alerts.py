"""Alertmanager's alerts, applied to incidents (engine.incidents); attributed by
engine.attribution.

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

Every function here reads and writes the store only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from conveyor.deploy_states import IncidentStatus
from conveyor.engine.alert_model import Alert, AlertNotification
from conveyor.engine.attribution import (
    DEFAULT_ATTRIBUTION_HOURS,
    Attribution,
    attribute_by_window,
    attribution_window,
    explicit_deployment,
)
from conveyor.engine.incidents import (
    emit_about,
    environment_of,
    open_incident,
    resolve_incident,
)
from conveyor.errors import NotFound
from conveyor.events import EventType
from conveyor.settings import Settings
from conveyor.store.db import Store, Writer
from conveyor.store.models import Delivery, Incident, Service, utcnow

log = logging.getLogger("conveyor.incidents")

ALERT_SOURCE = "alertmanager"
DEFAULT_SERVICE_LABEL = Settings().alert_service_label
ENVIRONMENT_LABELS = ("environment", "env")
# Start times of the occurrences of an alert merged into one incident, kept for deduplication.
MAX_STARTS = 50
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Outcome = Literal["opened", "updated", "unchanged", "resolved", "ignored"]


# --- settings ---------------------------------------------------------------------------------


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
        return asdict(self)


def record_alerts(
    store: Store,
    notification: AlertNotification,
    *,
    actor: str,
    allowed: Callable[[str, str | None], bool] | None = None,
    label: str = DEFAULT_SERVICE_LABEL,
    window: dt.timedelta | None = None,
) -> list[AlertOutcome]:
    """Apply each alert of an Alertmanager notification, one transaction per alert: a failure
    part-way leaves the alerts before it applied, and Alertmanager's retry (it retries on 5xx)
    finds them unchanged. ``allowed(service, environment)``: the sender's token limits; an
    alert outside them is recorded as ignored. ``label``: the alert label naming the service
    (CONVEYOR_ALERT_SERVICE_LABEL); ``window``: the attribution window (default 48 h)."""
    window = attribution_window() if window is None else window
    return [
        record_alert(store, alert, actor=actor, label=label, window=window, allowed=allowed)
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
    allowed: Callable[[str, str | None], bool] | None = None,
) -> AlertOutcome:
    """Apply one alert in one transaction. A concurrent twin (two Alertmanagers of a cluster
    delivering the same alert) that loses a uniqueness race is tried once more, and then
    finds the other's work done."""
    for attempt in range(2):
        try:
            with store.write() as w:
                return _apply_alert(w, alert, actor, label, window, now or utcnow(), allowed)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _apply_alert(
    w: Writer,
    alert: Alert,
    actor: str,
    label: str,
    window: dt.timedelta,
    now: dt.datetime,
    allowed: Callable[[str, str | None], bool] | None = None,
) -> AlertOutcome:
    name = alert.label(label)
    if name is None:
        return _ignore(w, alert, None, f"the alert has no {label!r} label naming a service", actor)
    # Locks the service's row (PostgreSQL): deliveries for one service apply one at a time.
    service = w.session.scalar(select(Service).where(Service.name == name).with_for_update())
    if service is None:
        return _ignore(w, alert, name, f"there is no service {name!r} in Conveyor", actor)
    environment, problem = environment_of(w.session, service, alert.label(*ENVIRONMENT_LABELS))
    if problem is not None:
        return _ignore(w, alert, name, problem, actor)
    if allowed is not None and not allowed(name, environment):
        where = f"{name} {environment}" if environment else name
        return _ignore(w, alert, name, f"the sender's token may not act on {where}", actor)
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
            EventType.ALERT_IGNORED,
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
                attribution = explicit_deployment(
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
    emit_about(
        w, EventType.INCIDENT_UPDATED, incident, changed=changed, title=incident.title, actor=actor
    )
    return "updated"


def _resolve_alert(
    w: Writer, incident: Incident, alert: Alert, actor: str, now: dt.datetime
) -> None:
    ended = min(alert.ends_at or now, now)
    resolve_incident(
        w, incident, f"alert {alert.name} resolved (Alertmanager)", at=ended, actor=actor
    )


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
