"""What the monitor of serving releases (delivery.monitor) decides, in the store only: which
environments this server watches (a lease row per environment), what it saw, and what a
release that keeps failing means (production: an incident and a rollback; elsewhere: unhealthy,
and people are told). Each function is one transaction, written before anyone hears of it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from conveyor.engine.incidents import open_incident
from conveyor.engine.promotion import (
    EXECUTING,
    D,
    env_row,
    notify,
    queue_deployment,
    version_of,
)
from conveyor.events import EventType, NoticeEvent
from conveyor.store.db import Store
from conveyor.store.models import Deployment, EnvironmentState, Release, utcnow

MONITOR_SOURCE = "monitor"


@dataclass(frozen=True)
class Watched:
    """An environment this server watches now: its row and the deployment that serves it."""

    environment_id: int
    deployment_id: int


def lease(
    store: Store, owner: str, seconds: float, now: dt.datetime | None = None
) -> list[Watched]:
    """The environments ``owner`` watches now. Each one's lease is taken or renewed by one
    conditional UPDATE, so two servers never both hold it; an environment with a deployment
    being carried out is left to that deployment."""
    now = now or utcnow()
    until = now + dt.timedelta(seconds=seconds)
    watched: list[Watched] = []
    with store.write() as w:
        busy = set(
            w.session.execute(
                select(Deployment.service_id, Deployment.environment).where(
                    Deployment.status.in_([s.value for s in EXECUTING] + [D.ROLLING_BACK.value])
                )
            ).all()
        )
        envs = w.session.scalars(
            select(EnvironmentState).where(EnvironmentState.current_deployment_id.is_not(None))
        ).all()
        for env in envs:
            if not env.instance or (env.service_id, env.name) in busy:
                continue
            taken = cast(
                "CursorResult[Any]",
                w.session.execute(
                    update(EnvironmentState)
                    .where(
                        EnvironmentState.id == env.id,
                        or_(
                            EnvironmentState.monitor_owner.is_(None),
                            EnvironmentState.monitor_owner == owner,
                            and_(
                                EnvironmentState.monitor_until.is_not(None),
                                EnvironmentState.monitor_until < now,
                            ),
                        ),
                    )
                    .values(monitor_owner=owner, monitor_until=until)
                    .execution_options(synchronize_session=False)
                ),
            )
            if taken.rowcount == 1 and env.current_deployment_id is not None:
                watched.append(Watched(env.id, env.current_deployment_id))
    return watched


def release_lease(store: Store, owner: str) -> None:
    """At shutdown: let another server take over at once instead of after the lease."""
    with store.write() as w:
        w.session.execute(
            update(EnvironmentState)
            .where(EnvironmentState.monitor_owner == owner)
            .values(monitor_owner=None, monitor_until=None)
        )


def record_health(
    store: Store, environment_id: int, deployment_id: int, healthy: bool, detail: str
) -> bool:
    """What the last check saw; False (nothing written) when another deployment serves now."""
    with store.write() as w:
        env = w.session.get_one(EnvironmentState, environment_id, with_for_update=True)
        if env.current_deployment_id != deployment_id:
            return False
        now = utcnow()
        if env.healthy is not healthy:
            dep = w.session.get_one(Deployment, deployment_id)
            w.emit(
                EventType.ENVIRONMENT_HEALTHY if healthy else EventType.ENVIRONMENT_UNHEALTHY,
                service=dep.service.name,
                environment=env.name,
                release=env.current_release_id,
                reason=detail,
            )
        env.healthy, env.checked_at, env.health_detail = healthy, now, detail
        return True


def serving_failed(store: Store, environment_id: int, deployment_id: int, reason: str) -> str:
    """The serving release kept failing. Production: open an incident and queue a rollback to
    the last verified release (rollbacks pass holds); other tiers: unhealthy, and people are
    told. Returns what was done, for the log."""
    with store.write() as w:
        env = w.session.get_one(EnvironmentState, environment_id, with_for_update=True)
        if env.current_deployment_id != deployment_id:
            return "another deployment serves now"
        dep = w.session.get_one(Deployment, deployment_id)
        now = utcnow()
        env.healthy, env.checked_at, env.health_detail = False, now, reason
        version = version_of(dep.release)
        summary = f"{dep.service.name} {version} in {env.name} is unhealthy: {reason}"
        notify(w, dep, NoticeEvent.DEPLOYMENT_FAILED, summary)
        if env.tier != "production":
            return "marked unhealthy"
        open_incident(
            w,
            service_id=dep.service_id,
            environment=env.name,
            title=summary,
            source=MONITOR_SOURCE,
            deployment=dep,
        )
        restore = _last_verified_other(w.session, dep)
        if restore is None:
            return "incident opened; no earlier verified release to roll back to"
        env_row(w, dep.service_id, env.name, env.tier)
        rollback = queue_deployment(
            w,
            restore,
            env.name,
            env.tier,
            trigger="monitor",
            by="conveyor",
            kind="rollback",
            rollback_of=dep.id,
        )
        rollback.reason = f"{version} kept failing: {reason}"
        return f"incident opened; rolling back to {version_of(restore)} (deployment {rollback.id})"


def newest_success(
    session: Session, dep: Deployment, *where: ColumnElement[bool]
) -> Deployment | None:
    """The newest deployment that succeeded in ``dep``'s environment, of those ``where`` keeps."""
    return session.scalar(
        select(Deployment)
        .where(
            Deployment.service_id == dep.service_id,
            Deployment.environment == dep.environment,
            Deployment.status == D.SUCCEEDED,
            *where,
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    )


def _last_verified_other(session: Session, dep: Deployment) -> Release | None:
    """The newest release that succeeded in this environment other than the failing one."""
    found = newest_success(session, dep, Deployment.release_id != dep.release_id)
    return found.release if found is not None else None
