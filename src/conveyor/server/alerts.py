"""Incidents over HTTP: Alertmanager's webhook, and opening, resolving and showing incidents.
(The list, GET /incidents, lives with the rest of delivery in server.delivery.)

Alertmanager authenticates with a bearer token of scope ``trigger`` (its receiver's
``http_config.authorization``). Its status codes are chosen for how Alertmanager retries: it
retries a notification on 5xx only and drops it on 4xx. So:

- 200: the notification was applied. Alerts Conveyor cannot place (no service label, unknown
  service or environment) are recorded as ignored with the reason and listed in the answer;
  they still get 200, because one stray alert must not make Alertmanager drop, or resend
  forever, the other alerts of its group, and resending would not change the answer;
- 400: the body is not an Alertmanager notification (nothing is stored; resending it would
  fail again); 401/403: token; 413: body over the server's webhook limit;
- 5xx (the store is unavailable): Alertmanager retries, and a redelivery is idempotent
  (engine.alerts deduplicates by fingerprint).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from conveyor.engine import alerts, incidents
from conveyor.engine.attribution import attribution_window
from conveyor.errors import ConveyorError
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.hooks import read_body
from conveyor.server.schemas import incidents as schemas
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.tokens import Identity
from conveyor.sources.alertmanager import AlertPayloadError, parse_notification

router = APIRouter(responses=ERRORS)
log = logging.getLogger("conveyor.alerts")
Reader = Annotated[Identity, Depends(require("read"))]
Trigger = Annotated[Identity, Depends(require("trigger"))]


def _state(request: Request) -> Any:
    return request.app.state.conveyor


def _actor(identity: Identity) -> str:
    return identity.user or f"token:{identity.name}"


def _bad_payload(message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "bad_payload", "message": message}}, status_code=400)


@router.post(
    "/hooks/alertmanager",
    tags=["hooks", "incidents"],
    response_model=schemas.AlertmanagerAnswer,
    responses=errors(413, 503),
)
async def alertmanager_hook(request: Request, identity: Trigger) -> JSONResponse:
    """An Alertmanager webhook notification (payload version 4): firing alerts open or update
    incidents, resolved ones resolve them."""
    state = _state(request)
    body = await read_body(request, state.config.webhook_max_bytes)
    try:
        notification = parse_notification(body)
    except AlertPayloadError as exc:
        log.warning("Alertmanager notification refused: %s", exc.message)
        return _bad_payload(exc.message)
    try:
        # The store is synchronous: apply the alerts off the event loop.
        outcomes = await asyncio.to_thread(
            alerts.record_alerts,
            state.store,
            notification,
            actor=_actor(identity),
            allowed=identity.may_act_on if identity.limited else None,
            label=state.settings.alert_service_label,
            window=attribution_window(state.settings.attribution_hours),
        )
    except ConveyorError as exc:
        # A setting of this server is wrong (CONVEYOR_ALERT_SERVICE_LABEL, ...): a 5xx, so
        # that Alertmanager keeps the notification and retries once it is fixed.
        log.error("Alertmanager notification not applied: %s", exc)
        return JSONResponse(
            {"error": {"code": "misconfigured", "message": exc.message, "hint": exc.hint}},
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "ok",
            "receiver": notification.receiver,
            "alerts": [o.as_dict() for o in outcomes],
        }
    )


class IncidentIn(BaseModel):
    service: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=2000)
    environment: str | None = Field(None, min_length=1, max_length=200)
    deployment: int | None = Field(None, ge=1)
    release: int | None = Field(None, ge=1)
    commit: str | None = Field(None, pattern=r"^[0-9a-fA-F]{7,64}$")
    at: AwareDatetime | None = Field(None, description="When it began (default: now).")


class ResolveIn(BaseModel):
    at: AwareDatetime | None = Field(None, description="When it was resolved (default: now).")
    reason: str | None = Field(None, max_length=2000)


def _conflict(exc: incidents.IncidentConflict) -> HTTPException:
    return HTTPException(409, exc.message)


@router.post(
    "/incidents",
    status_code=201,
    tags=["incidents"],
    response_model=schemas.IncidentOut,
    responses=errors(404),
)
def open_incident(request: Request, body: IncidentIn, identity: Trigger) -> dict[str, Any]:
    """Open an incident by hand; ``deployment``, ``release`` or ``commit`` attribute it
    explicitly, else the attribution window does."""
    scoping.check(identity, body.service, body.environment, "open an incident for")
    state = _state(request)
    store = state.store
    incident_id = incidents.open_reported(
        store,
        service=body.service,
        title=body.title,
        actor=_actor(identity),
        environment=body.environment,
        deployment=body.deployment,
        release=body.release,
        commit=body.commit,
        at=_utc(body.at),
        window=attribution_window(state.settings.attribution_hours),
    )
    return incidents.incident_detail(store, incident_id)


@router.post(
    "/incidents/{incident_id}/resolve",
    tags=["incidents"],
    response_model=schemas.IncidentOut,
    responses=errors(404, 409),
)
def resolve_incident(
    request: Request, incident_id: int, body: ResolveIn, identity: Trigger
) -> dict[str, Any]:
    """Resolve an open incident (409 if it is resolved already)."""
    store = _state(request).store
    scoping.check(identity, *scoping.of_incident(store, incident_id), "resolve incidents of")
    try:
        incidents.resolve_reported(
            store, incident_id, actor=_actor(identity), at=_utc(body.at), reason=body.reason
        )
    except incidents.IncidentConflict as exc:
        raise _conflict(exc) from None
    return incidents.incident_detail(store, incident_id)


@router.get(
    "/incidents/{incident_id}",
    tags=["incidents"],
    response_model=schemas.IncidentOut,
    responses=errors(404),
)
def show_incident(request: Request, incident_id: int, _: Reader) -> dict[str, Any]:
    """One incident: attribution (how and why), recovery, and the alert behind it."""
    return incidents.incident_detail(_state(request).store, incident_id)


@router.get("/alerts/ignored", tags=["incidents"], response_model=list[schemas.IgnoredAlert])
def ignored_alerts(request: Request, _: Reader) -> list[dict[str, Any]]:
    """Alerts that opened nothing because Conveyor could not place them, with the reason,
    newest first: what to look at when an alert fired and no incident appeared."""
    return list(alerts.ignored_alerts(_state(request).store))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None
