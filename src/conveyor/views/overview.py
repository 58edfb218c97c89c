"""The overview: every service × environment at a glance (what runs where, since when, healthy
or not, held or not, what waits, approvals and incidents), and each service's latest runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from conveyor.engine.promotion import pipeline_of, version_of
from conveyor.store.db import Store
from conveyor.store.models import (
    Approval,
    Deployment,
    EnvironmentState,
    Incident,
    Release,
    Run,
    Service,
    utcnow,
)

# Deployments that have not ended: the first of these per environment is "in progress" when it
# is past queueing, the rest wait.
UNDERWAY = ("deploying", "checking", "verifying", "rolling_back")
WAITING = ("queued", "awaiting_approval", "held")
RUNS_PER_SERVICE = 5


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _release(release: Release | None) -> dict[str, Any] | None:
    if release is None:
        return None
    commit = release.run.commit or {}
    return {
        "id": release.id,
        "version": version_of(release),
        "sha": release.sha,
        "ref": release.ref,
        "message": _first_line(commit.get("subject") or commit.get("message")),
        "author": commit.get("author_name"),
        "created_at": release.created_at,
    }


def _picked(row: Any, **fields: str) -> dict[str, Any] | None:
    """``{key: row.<attribute>}`` for each ``key=attribute``; None without a row."""
    return None if row is None else {key: getattr(row, name) for key, name in fields.items()}


def _state_of(env: EnvironmentState | None, **fields: str) -> dict[str, Any]:
    """The environment's state (``_picked``); all None for an environment never deployed to
    (no state yet)."""
    return _picked(env, **fields) or dict.fromkeys(fields)


def _health(env: EnvironmentState | None, last: Deployment | None) -> dict[str, Any]:
    """What a person wants to know first: is it serving well, and what happened last."""
    if env is not None and env.healthy is not None:
        state = "healthy" if env.healthy else "unhealthy"
    else:
        state = "unknown"
    checks = list(last.checks) if last is not None else []
    return {
        "state": state,
        # The monitor's last look at what serves, and what it saw.
        **_state_of(env, healthy="healthy", checked_at="checked_at", detail="health_detail"),
        "last_deployment": _picked(
            last,
            id="id",
            status="status",
            kind="kind",
            release="release_id",
            reason="reason",
            finished_at="finished_at",
        ),
        "last_check": checks[-1] if checks else None,
    }


def _runs(session: Any, service_id: int) -> list[dict[str, Any]]:
    now = utcnow()
    runs = session.scalars(
        select(Run)
        .where(Run.service_id == service_id)
        .order_by(Run.id.desc())
        .limit(RUNS_PER_SERVICE)
    ).all()
    out = []
    for run in runs:
        end = run.finished_at or (now if run.started_at else None)
        out.append(
            {
                "id": run.id,
                "status": run.status,
                "sha": run.sha,
                "ref": run.ref,
                "message": _first_line((run.commit or {}).get("subject")),
                "trigger": run.trigger,
                "created_at": run.created_at,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "duration": (end - run.started_at).total_seconds()
                if run.started_at and end
                else None,
            }
        )
    return out


def _counts(session: Any, query: Any) -> dict[tuple[int, str | None], int]:
    return {(sid, env): int(n) for sid, env, n in session.execute(query).all()}


def overview(store: Store) -> dict[str, Any]:
    with store.session() as session:
        approvals = _counts(
            session,
            select(Deployment.service_id, Deployment.environment, func.count(Approval.id))
            .join(Approval, Approval.deployment_id == Deployment.id)
            .where(Approval.status == "pending")
            .group_by(Deployment.service_id, Deployment.environment),
        )
        incidents = _counts(
            session,
            select(Incident.service_id, Incident.environment, func.count(Incident.id))
            .where(Incident.status == "open")
            .group_by(Incident.service_id, Incident.environment),
        )
        services = []
        for svc in session.scalars(select(Service).order_by(Service.name)):
            latest = session.scalar(
                select(Release)
                .where(Release.service_id == svc.id)
                .order_by(Release.id.desc())
                .limit(1)
            )
            configured = pipeline_of(latest.run).environments if latest is not None else {}
            rows = {
                e.name: e
                for e in session.scalars(
                    select(EnvironmentState).where(EnvironmentState.service_id == svc.id)
                )
            }
            names = list(configured) + [n for n in rows if n not in configured]
            environments = []
            for name in names:
                env = rows.get(name)
                config = configured.get(name)
                open_deps = session.scalars(
                    select(Deployment)
                    .where(
                        Deployment.service_id == svc.id,
                        Deployment.environment == name,
                        Deployment.status.in_(UNDERWAY + WAITING),
                    )
                    .order_by(Deployment.id)
                ).all()
                last = session.scalar(
                    select(Deployment)
                    .where(Deployment.service_id == svc.id, Deployment.environment == name)
                    .order_by(Deployment.id.desc())
                    .limit(1)
                )
                current = (
                    session.get(Release, env.current_release_id)
                    if env is not None and env.current_release_id
                    else None
                )
                waiting = [d for d in open_deps if d.status in WAITING]
                underway = next((d for d in open_deps if d.status in UNDERWAY), None)
                environments.append(
                    {
                        "environment": name,
                        "tier": env.tier if env is not None else (config.tier if config else None),
                        "after": config.after if config is not None else None,
                        "release": _release(current),
                        **_state_of(env, since="since", url="url"),
                        "health": _health(env, last),
                        "held": bool(env is not None and env.held),
                        **_state_of(env, held_by="held_by", hold_reason="hold_reason"),
                        "in_progress": _picked(
                            underway,
                            deployment="id",
                            release="release_id",
                            status="status",
                            kind="kind",
                        ),
                        "queued": {
                            "count": len(waiting),
                            "releases": [d.release_id for d in waiting],
                            "deployments": [
                                {"id": d.id, "release": d.release_id, "status": d.status}
                                for d in waiting
                            ],
                        },
                        "pending_approvals": approvals.get((svc.id, name), 0),
                        "open_incidents": incidents.get((svc.id, name), 0),
                    }
                )
            services.append(
                {
                    "name": svc.name,
                    "environments": environments,
                    "runs": _runs(session, svc.id),
                    "pending_approvals": sum(
                        n for (sid, _), n in approvals.items() if sid == svc.id
                    ),
                    "open_incidents": sum(n for (sid, _), n in incidents.items() if sid == svc.id),
                }
            )
    return {
        "services": services,
        "pending_approvals": sum(approvals.values()),
        "open_incidents": sum(incidents.values()),
        "generated_at": utcnow(),
    }
