"""Read models of delivery for the API, the CLI and the UI: environments, deployments,
approvals, incidents and the audit log. Plain dicts, JSON-ready."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, joinedload

from conveyor.engine.promotion import environment_config, pipeline_of, version_of
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.store.db import Store, get_or_not_found
from conveyor.store.models import (
    Approval,
    Deployment,
    EnvironmentState,
    Event,
    Incident,
    Release,
    Run,
    Service,
)
from conveyor.views.filters import filtered
from conveyor.views.runs import RunFilter

# Events that record a person's (or the policy's) decision: the audit log.
AUDIT_EVENTS = (
    EventType.DEPLOYMENT_QUEUED,
    EventType.APPROVAL_REQUESTED,
    EventType.APPROVAL_DECISION,
    EventType.APPROVAL_REFUSED,
    EventType.APPROVAL_APPROVED,
    EventType.APPROVAL_REJECTED,
    EventType.APPROVAL_EXPIRED,
    EventType.APPROVAL_WITHDRAWN,
    EventType.ENVIRONMENT_HELD,
    EventType.ENVIRONMENT_UNHELD,
    EventType.DEPLOYMENT_CANCELLED,
    EventType.DEPLOYMENT_ROLLING_BACK,
    EventType.INCIDENT_OPENED,
    EventType.INCIDENT_UPDATED,
    EventType.INCIDENT_RESOLVED,
    EventType.ALERT_IGNORED,
    EventType.HISTORY_IMPORTED,
    EventType.TOKEN_CREATED,
    EventType.TOKEN_REVOKED,
    EventType.USER_SAVED,
    EventType.SERVICE_REGISTERED,
    EventType.SERVICE_REMOVED,
    # Web sign-in (conveyor.server.session): refusals, and new passwords or scopes.
    EventType.SESSION_REFUSED,
    EventType.USER_CREDENTIALS_CHANGED,
    # Pipeline secrets (conveyor.store.vault): names and scopes only, never a value.
    EventType.SECRET_SET,
    EventType.SECRET_REMOVED,
    # Teams (conveyor.metrics.teams): the services measured together.
    EventType.TEAM_SAVED,
    EventType.TEAM_DELETED,
)


# A deployment's own events, one per status it entered (engine.promotion.move).
DEPLOYMENT_EVENTS = [t.value for t in EventType if t.value.startswith("deployment.")]


def deployment_summary(dep: Deployment) -> dict[str, Any]:
    return {
        "id": dep.id,
        "service": dep.service.name,
        "environment": dep.environment,
        "tier": dep.tier,
        "release": dep.release_id,
        "version": version_of(dep.release),
        "sha": dep.release.sha,
        "subject": dep.release.run.commit.get("subject"),
        "author": dep.release.run.commit.get("author_name"),
        "kind": dep.kind,
        "status": dep.status,
        "reason": dep.reason,
        "trigger": dep.trigger,
        "requested_by": dep.requested_by,
        "previous_release": dep.previous_release_id,
        "rollback_of": dep.rollback_of,
        "created_at": dep.created_at,
        "started_at": dep.started_at,
        "healthy_at": dep.healthy_at,
        "finished_at": dep.finished_at,
        "url": dep.instance.get("endpoint") or dep.url,
    }


def list_deployments(
    store: Store,
    *,
    service: str | None = None,
    environment: str | None = None,
    release: int | None = None,
    status: str | None = None,
    limit: int = 50,
    narrow: RunFilter | None = None,
) -> list[dict[str, Any]]:
    """The newest deployments first, at most `limit`; `narrow` filters by the run that built
    each one's release (since: the deployment's own time)."""
    narrow = narrow or RunFilter()
    with store.session() as session:
        query = filtered(
            select(Deployment),
            (Deployment.environment, environment),
            (Deployment.release_id, release),
            (Deployment.status, status),
            service=service,
        )
        query = (
            query.join(Release, Deployment.release_id == Release.id)
            .join(Run, Release.run_id == Run.id)
            .where(*narrow.conditions(order=Deployment.id, made=Deployment.created_at))
            .options(
                joinedload(Deployment.service),
                joinedload(Deployment.release).joinedload(Release.run),
            )
        )
        found = narrow.newest_first(session, query, Deployment.id, limit)
        return [deployment_summary(d) for d in found]


# The end of a deployed app's own output shown with its deployment: enough for a traceback.
OUTPUT_LINES = 200
OUTPUT_BYTES = 64 * 1024


def app_output(instance: Mapping[str, Any]) -> list[str]:
    """The last lines the deployed app wrote (stdout and stderr), when its target keeps them in
    a file on this machine (the process target's ``log``); empty otherwise."""
    path = instance.get("log")
    if not isinstance(path, str):
        return []
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - OUTPUT_BYTES, 0))
            tail = f.read()
    except OSError:
        return []
    lines = tail.decode("utf-8", "replace").splitlines()
    if len(tail) == OUTPUT_BYTES:
        lines = lines[1:]  # the first may be cut
    return lines[-OUTPUT_LINES:]


def deployment_detail(store: Store, deployment_id: int) -> dict[str, Any]:
    with store.session() as session:
        dep = get_or_not_found(
            session, Deployment, deployment_id, "deployment", "`conveyor deployments` lists them"
        )
        data = deployment_summary(dep)
        data["checks"] = dep.checks
        data["log"] = dep.log
        data["output"] = app_output(dep.instance)
        data["approvals"] = [
            approval_summary(a)
            for a in session.scalars(select(Approval).where(Approval.deployment_id == dep.id))
        ]
        data["failed_at"] = dep.failed_at
        data["target"] = _target(dep)
        data["history"] = _history(session, dep)
        data["incidents"] = list(
            session.scalars(
                select(Incident.id).where(Incident.deployment_id == dep.id).order_by(Incident.id)
            )
        )
        return data


def _target(dep: Deployment) -> dict[str, Any] | None:
    """How the release's pipeline file deploys to the environment: its target and strategy;
    None when that file has no such environment (a rollback to an older file)."""
    try:
        deploy = environment_config(dep).deploy
    except ConveyorError:
        return None
    return {"kind": deploy.target, "strategy": deploy.strategy}


def _history(session: Session, dep: Deployment) -> list[dict[str, Any]]:
    """Each status the deployment went through, when, and why (its events, in order)."""
    events = session.scalars(
        select(Event)
        .where(
            Event.service == dep.service.name,
            Event.type.in_(DEPLOYMENT_EVENTS),
            Event.data["deployment"].as_integer() == dep.id,
        )
        .order_by(Event.id)
    )
    return [
        {
            "status": e.type.removeprefix("deployment."),
            "at": e.ts,
            "reason": e.data.get("reason"),
            "actor": e.data.get("actor"),
        }
        for e in events
    ]


def environments(store: Store, service: str | None = None) -> list[dict[str, Any]]:
    """Every environment of every service (or one): what serves, since when, healthy or not,
    held or not, and what waits — in the chain order of the latest release's file."""
    out: list[dict[str, Any]] = []
    with store.session() as session:
        services = session.scalars(
            select(Service).order_by(Service.name).where(Service.name == service)
            if service
            else select(Service).order_by(Service.name)
        ).all()
        if service and not services:
            raise NotFound(f"there is no service {service}")
        for svc in services:
            latest = session.scalar(
                select(Release)
                .where(Release.service_id == svc.id)
                .order_by(Release.id.desc())
                .limit(1)
            )
            names = list(pipeline_of(latest.run).environments) if latest else []
            rows = {
                e.name: e
                for e in session.scalars(
                    select(EnvironmentState).where(EnvironmentState.service_id == svc.id)
                )
            }
            names += [n for n in rows if n not in names]
            for name in names:
                out.append(_environment(session, svc, name, rows.get(name)))
    return out


def _environment(
    session: Any, svc: Service, name: str, env: EnvironmentState | None
) -> dict[str, Any]:
    current = (
        session.get(Release, env.current_release_id) if env and env.current_release_id else None
    )
    waiting = session.scalars(
        select(Deployment)
        .where(
            Deployment.service_id == svc.id,
            Deployment.environment == name,
            Deployment.status.in_(
                [
                    "queued",
                    "awaiting_approval",
                    "deploying",
                    "checking",
                    "verifying",
                    "held",
                    "rolling_back",
                ]
            ),
        )
        .order_by(Deployment.id)
    ).all()
    return {
        "service": svc.name,
        "environment": name,
        "tier": env.tier if env else None,
        "release": current.id if current else None,
        "version": version_of(current) if current else None,
        "sha": current.sha if current else None,
        "since": env.since if env else None,
        "healthy": env.healthy if env else None,
        # The monitor's last look at what serves (delivery.monitor), and what it saw.
        "checked_at": env.checked_at if env else None,
        "health_detail": env.health_detail if env else None,
        "url": env.url if env else None,
        "verified_release": env.verified_release_id if env else None,
        "held": bool(env and env.held),
        "held_by": env.held_by if env else None,
        "hold_reason": env.hold_reason if env else None,
        "queue": [
            {
                "deployment": d.id,
                "release": d.release_id,
                "kind": d.kind,
                "status": d.status,
                "reason": d.reason,
            }
            for d in waiting
        ],
    }


def approval_summary(approval: Approval) -> dict[str, Any]:
    dep = approval.deployment
    return {
        "id": approval.id,
        "kind": approval.kind,
        "status": approval.status,
        "deployment": dep.id,
        "service": dep.service.name,
        "environment": dep.environment,
        "release": dep.release_id,
        "version": version_of(dep.release),
        "approvers": approval.approvers,
        "required": approval.required,
        "approved": approvals_given(approval),
        "self_approval": approval.self_approval,
        "requested_at": approval.requested_at,
        "deadline": approval.deadline,
        "on_timeout": approval.on_timeout,
        "reason": approval.reason,
        "decisions": decisions(approval),
    }


def approvals_given(approval: Approval) -> int:
    """How many people have approved so far."""
    return sum(1 for d in approval.decisions if d.decision == "approve")


def decisions(approval: Approval) -> list[dict[str, Any]]:
    """Who decided what on an approval, how and when, in order."""
    return [
        {"user": d.user, "decision": d.decision, "reason": d.reason, "via": d.via, "at": d.at}
        for d in approval.decisions
    ]


def list_approvals(store: Store, *, pending_only: bool = True) -> list[dict[str, Any]]:
    with store.session() as session:
        query = select(Approval).order_by(Approval.id.desc()).limit(100)
        if pending_only:
            query = query.where(Approval.status == "pending")
        return [approval_summary(a) for a in session.scalars(query)]


def audit_log(
    store: Store, *, service: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with store.session() as session:
        query = (
            select(Event).where(Event.type.in_(AUDIT_EVENTS)).order_by(Event.id.desc()).limit(limit)
        )
        if service:
            query = query.where(or_(Event.service == service))
        return [
            {
                "id": e.id,
                "at": e.ts,
                "type": e.type,
                "service": e.service,
                "actor": e.data.get("actor"),
                "data": {k: v for k, v in e.data.items() if k != "actor"},
            }
            for e in session.scalars(query)
        ]


def list_incidents(
    store: Store,
    *,
    service: str | None = None,
    open_only: bool = False,
    status: str | None = None,
    environment: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Incidents, the latest opened first, each as `conveyor incident show` describes it
    (attribution, restore) plus ``recovery_seconds``: to restored service where Conveyor knows
    when that was, else resolved minus opened; None while open and not restored."""
    from conveyor.engine.incidents import describe

    with store.session() as session:
        query = (
            select(Incident)
            .order_by(Incident.opened_at.desc(), Incident.id.desc())
            .limit(limit)
            .options(joinedload(Incident.service))
        )
        if open_only:
            status = "open"
        query = filtered(
            query, (Incident.environment, environment), (Incident.status, status), service=service
        )
        out = []
        for incident in session.scalars(query):
            row = describe(session, incident)
            if row["recovery_seconds"] is None and incident.resolved_at is not None:
                took = incident.resolved_at - incident.opened_at
                row["recovery_seconds"] = round(took.total_seconds(), 3)
            # An imported incident names its deployment by the fact key of the import.
            key = incident.deployment_key
            row["deployment_key"] = key
            if key and "attribution" not in incident.data:
                row["attribution"] = {"how": "explicit", "detail": f"named by the import: {key}"}
            elif incident.source == "import" and "attribution" not in incident.data:
                row["attribution"] = {
                    "how": "none",
                    "detail": "imported without a deployment: DORA reports attribute it by window",
                }
            out.append(row)
        return out
