"""DORA facts of Conveyor's own deployments, written in the transaction that ends them.

A deployment that really happened (succeeded, failed, rolled back) becomes a DeploymentFact;
one that never took place (rejected, superseded, cancelled) does not. The commit range of a
successful deployment is computed by the controller (git, off the event loop) and passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.deploy_states import DeploymentKind
from conveyor.engine.promotion import environment_config
from conveyor.facts import Change, DeploymentFact, DeploymentResult
from conveyor.store.db import Writer
from conveyor.store.facts import write_fact
from conveyor.store.models import Approval, Deployment, DeploymentFactRow, Run, utcnow


def fact_key(deployment_id: int) -> str:
    return f"c{deployment_id}"


def previous_success(session: Session, service: str, environment: str) -> str | None:
    """The commit of the last successful (non-rollback) deployment of this environment: the
    next deployment's commit range starts after it."""
    return session.scalar(
        select(DeploymentFactRow.sha)
        .where(
            DeploymentFactRow.service == service,
            DeploymentFactRow.environment == environment,
            DeploymentFactRow.kind == "deploy",
            DeploymentFactRow.result == "succeeded",
            DeploymentFactRow.sha != "",  # an imported deployment may not name its commit
        )
        .order_by(DeploymentFactRow.finished_at.desc(), DeploymentFactRow.id.desc())
        .limit(1)
    )


def _stages(w: Writer, dep: Deployment) -> dict[str, dt.datetime]:
    run = dep.release.run
    stages: dict[str, dt.datetime] = {}
    if run.started_at:
        stages["run_started"] = run.started_at
    if run.finished_at:
        stages["run_finished"] = run.finished_at
    after = environment_config(dep).after if dep.kind == DeploymentKind.DEPLOY else None
    if after:
        finished = w.session.scalar(
            select(Deployment.finished_at)
            .where(
                Deployment.release_id == dep.release_id,
                Deployment.environment == after,
                Deployment.status == "succeeded",
            )
            .order_by(Deployment.id.desc())
            .limit(1)
        )
        if finished:
            stages["staging_finished"] = finished
    approval = w.session.scalar(
        select(Approval)
        .where(Approval.deployment_id == dep.id, Approval.kind == "approval")
        .order_by(Approval.id.desc())
        .limit(1)
    )
    if approval is not None:
        stages["approval_requested"] = approval.requested_at
        if approval.decided_at:
            stages["approval_decided"] = approval.decided_at
    return stages


def _seen(w: Writer, changes: Sequence[Change]) -> list[Change]:
    """When Conveyor first saw each commit (its first run), where it did."""
    if not changes:
        return []
    seen = dict(
        w.session.execute(
            select(Run.sha, func.min(Run.created_at))
            .where(Run.sha.in_([c.sha for c in changes]))
            .group_by(Run.sha)
        ).all()
    )
    return [
        Change(c.sha, c.committed_at, c.authored_at, seen.get(c.sha) or c.seen_at) for c in changes
    ]


def record_deployment_fact(
    w: Writer, dep: Deployment, result: DeploymentResult, changes: Sequence[Change] = ()
) -> None:
    now = utcnow()
    fact = DeploymentFact(
        id=fact_key(dep.id),
        service=dep.service.name,
        environment=dep.environment,
        tier=dep.tier,
        kind="rollback" if dep.kind == DeploymentKind.ROLLBACK else "deploy",
        result=result,
        sha=dep.release.sha,
        started_at=dep.started_at or dep.created_at,
        finished_at=dep.finished_at or now,
        failed_at=dep.failed_at if result != "succeeded" else None,
        rollback_of=fact_key(dep.rollback_of) if dep.rollback_of else None,
        changes=tuple(_seen(w, changes)) if result == "succeeded" else (),
        stages=_stages(w, dep),
        served=dep.served_at is not None,
        served_at=dep.served_at,
    )
    write_fact(w, fact, source="conveyor", deployment_id=dep.id)
