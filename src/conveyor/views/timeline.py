"""The release record as a timeline, for the release page: the commit, the run that built and
tested it, its artifacts and publication, every deployment of it (checks included), the
approvals asked on the way, the rollbacks that undid it and the incidents it caused.

Read from the tables the engine keeps (they are projections of the event log), in one read
transaction, so every entry agrees with the others. Plain dicts, JSON-ready.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from conveyor.engine.incidents import describe
from conveyor.engine.promotion import version_of
from conveyor.forges import links as forge_links
from conveyor.store.db import Store
from conveyor.store.models import (
    Approval,
    Artifact,
    Delivery,
    Deployment,
    EnvironmentState,
    Incident,
    Release,
    Run,
)
from conveyor.views.delivery import approvals_given, decisions, deployment_summary
from conveyor.views.runs import load_release

# Where an entry without a time of its own sorts: after everything that has one.
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _commit_entry(session: Session, release: Release) -> dict[str, Any]:
    run = release.run
    commit = run.commit
    forge = session.scalar(
        select(Delivery.source).where(Delivery.run_id == run.id, Delivery.source != "hook")
    )
    before = session.scalar(
        select(Release.sha)
        .where(Release.service_id == release.service_id, Release.id < release.id)
        .order_by(Release.id.desc())
        .limit(1)
    )
    committed = _time(commit.get("committed_at"))
    return {
        "kind": "commit",
        "at": committed or _time(commit.get("authored_at")) or run.created_at,
        "sha": release.sha,
        "ref": release.ref,
        "subject": commit.get("subject"),
        "message": commit.get("message"),
        "author": commit.get("author_name"),
        "author_email": commit.get("author_email"),
        "authored_at": _time(commit.get("authored_at")),
        "committer": commit.get("committer_name"),
        "committer_email": commit.get("committer_email"),
        "committed_at": committed,
        "pusher": commit.get("pusher"),
        "pusher_via": commit.get("pusher_via"),
        "parents": commit.get("parents") or [],
        "previous_release_sha": before,
        "links": forge_links(release.service.repository, forge, release.sha, before),
    }


def _run_entry(run: Run) -> dict[str, Any]:
    return {
        "kind": "run",
        "at": run.started_at or run.created_at,
        "run": run.id,
        "status": run.status,
        "reason": run.reason,
        "trigger": run.trigger,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": _seconds(run.started_at, run.finished_at),
        "jobs": [
            {
                "name": job.name,
                "status": job.status,
                "reason": job.reason,
                "needs": job.needs,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
                "duration": _seconds(job.started_at, job.finished_at),
            }
            for job in run.jobs
        ],
    }


def _release_entry(session: Session, release: Release) -> dict[str, Any]:
    names = {job.id: job.name for job in release.run.jobs}
    artifacts = session.scalars(
        select(Artifact).where(Artifact.run_id == release.run_id).order_by(Artifact.id)
    )
    publication = release.publication or {}
    return {
        "kind": "release",
        "at": release.created_at,
        "release": release.id,
        "version": version_of(release),
        "artifacts": [
            {"job": names.get(a.job_id), "path": a.path, "digest": a.digest, "size": a.size}
            for a in artifacts
        ],
        "publication": {
            "status": publication.get("status") or "none",
            "reference": publication.get("reference"),
            "digest": publication.get("digest"),
            "images": publication.get("images") or [],
            "error": publication.get("error"),
        },
    }


def _deployment_fields(dep: Deployment) -> dict[str, Any]:
    """The deployment as GET /deployments shows it, with its failure time, duration and
    checks; "deployment" for its id and no "kind" (the entry's own kind says that)."""
    fields = deployment_summary(dep)
    fields["deployment"] = fields.pop("id")
    # The kind is the entry's own; the commit is the release's, told in its own entry.
    for known in ("kind", "subject", "author"):
        del fields[known]
    return fields | {
        "failed_at": dep.failed_at,
        "duration": _seconds(dep.started_at, dep.finished_at),
        "checks": [
            {
                "kind": c.get("kind"),
                "outcome": c.get("outcome"),
                "detail": c.get("detail"),
                "duration": c.get("duration"),
                "data": c.get("data") or {},
            }
            for c in dep.checks
            if isinstance(c, dict)
        ],
    }


def _deployment_entry(dep: Deployment, undone: dict[int, Deployment]) -> dict[str, Any]:
    entry = {"kind": "deployment", "at": dep.created_at, **_deployment_fields(dep)}
    if dep.kind != "rollback":
        return entry
    entry["kind"] = "rollback"
    target = undone.get(dep.rollback_of) if dep.rollback_of else None
    if dep.trigger == "failure" and target is not None:
        why = f"deployment {target.id} ({version_of(target.release)}) failed: {target.reason}"
    elif dep.trigger == "failure":
        why = "a deployment failed"
    else:
        why = f"rolled back by hand by {dep.requested_by or 'someone'}"
    entry["why"] = why
    entry["automatic"] = dep.trigger == "failure"
    entry["undid"] = (
        {
            "deployment": target.id,
            "release": target.release_id,
            "version": version_of(target.release),
            "status": target.status,
        }
        if target is not None
        else None
    )
    return entry


def _approval_entry(approval: Approval) -> dict[str, Any]:
    dep = approval.deployment
    return {
        "kind": "approval",
        "at": approval.requested_at,
        "approval": approval.id,
        "approval_kind": approval.kind,
        "status": approval.status,
        "deployment": dep.id,
        "environment": dep.environment,
        "approvers": approval.approvers,
        "required": approval.required,
        "approved": approvals_given(approval),
        "requested_at": approval.requested_at,
        "deadline": approval.deadline,
        "decided_at": approval.decided_at,
        "reason": approval.reason,
        "decisions": decisions(approval),
    }


def _incident_entry(session: Session, incident: Incident) -> dict[str, Any]:
    detail = describe(session, incident)
    return {"kind": "incident", "at": incident.opened_at, "incident": incident.id, **detail}


def release_timeline(store: Store, release_id: int) -> dict[str, Any]:
    """The release and its record, oldest entry first (see the module's docstring)."""
    with store.session() as session:
        release = load_release(session, release_id)
        own = session.scalars(
            select(Deployment).where(Deployment.release_id == release.id).order_by(Deployment.id)
        ).all()
        own_ids = [d.id for d in own]
        # Rollbacks that undid a deployment of this release put another release back, but
        # they belong to this release's story: why it stopped serving.
        undoing = (
            session.scalars(
                select(Deployment)
                .where(Deployment.rollback_of.in_(own_ids), Deployment.release_id != release.id)
                .order_by(Deployment.id)
            ).all()
            if own_ids
            else []
        )
        deployments = sorted([*own, *undoing], key=lambda d: d.id)
        undone_ids = {d.rollback_of for d in deployments if d.rollback_of}
        undone = {
            d.id: d
            for d in session.scalars(select(Deployment).where(Deployment.id.in_(undone_ids)))
        }
        ids = [d.id for d in deployments]
        approvals = (
            session.scalars(
                select(Approval).where(Approval.deployment_id.in_(ids)).order_by(Approval.id)
            ).all()
            if ids
            else []
        )
        incidents = session.scalars(
            select(Incident)
            .where(
                or_(Incident.release_id == release.id, Incident.deployment_id.in_(own_ids))
                if own_ids
                else Incident.release_id == release.id
            )
            .order_by(Incident.id)
        ).all()
        entries = [
            _commit_entry(session, release),
            _run_entry(release.run),
            _release_entry(session, release),
            *(_deployment_entry(d, undone) for d in deployments),
            *(_approval_entry(a) for a in approvals),
            *(_incident_entry(session, i) for i in incidents),
        ]
        # Stable: entries at the same instant keep the order above (commit, run, release, ...).
        entries.sort(key=lambda e: e["at"] or LATEST)
        commit = release.run.commit
        return {
            "release": {
                "id": release.id,
                "service": release.service.name,
                "version": version_of(release),
                "sha": release.sha,
                "ref": release.ref,
                "run": release.run_id,
                "subject": commit.get("subject"),
                "author": commit.get("author_name"),
                "created_at": release.created_at,
                "environments": _where_it_serves(session, release),
            },
            "entries": entries,
        }


def _where_it_serves(session: Session, release: Release) -> list[str]:
    return list(
        session.scalars(
            select(EnvironmentState.name)
            .where(
                EnvironmentState.service_id == release.service_id,
                EnvironmentState.current_release_id == release.id,
            )
            .order_by(EnvironmentState.name)
        )
    )
