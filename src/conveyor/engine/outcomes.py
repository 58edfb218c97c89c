"""What a deployment's carrier reports, and what it means for the environment: placed,
checked, serving, succeeded, failed (with the failure policy), incidents, restarts and
publication. Each function is one transaction, checked against engine.deploy_states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from conveyor.deploy_states import DeploymentKind, DeploymentStatus, IncidentStatus
from conveyor.engine.incidents import open_incident, resolve_incident
from conveyor.engine.promotion import (
    D,
    env_row,
    environment_config,
    get_deployment,
    hold_environment,
    move,
    new_approval,
    notify,
    pipeline_of,
    queue_deployment,
    service_named,
    version_of,
)
from conveyor.engine.recording import record_deployment_fact
from conveyor.events import EventType, NoticeEvent
from conveyor.facts import Change
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    Deployment,
    EnvironmentState,
    Incident,
    Release,
    utcnow,
)


def record_placed(
    store: Store,
    deployment_id: int,
    instance: dict[str, Any],
    url: str | None,
    *,
    serving: bool = False,
) -> None:
    """The target put the release in place; health checks start. ``serving``: it takes
    traffic already (replaced in place), so it serves users from now on."""
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        dep.instance, dep.url = instance, url
        if serving:
            dep.served_at = dep.served_at or utcnow()
        if dep.status != D.CHECKING:  # a rollback resumed after a crash was placed again
            move(w, dep, D.CHECKING)


def record_log(store: Store, deployment_id: int, lines: Sequence[str]) -> None:
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        dep.log = [*dep.log, *lines][-2000:]


def record_checks(
    store: Store, deployment_id: int, results: Sequence[dict[str, Any]], status: DeploymentStatus
) -> int | None:
    """Store check results and move on: VERIFYING, HELD (returns the approval a person must
    give) or stay for the caller to succeed/fail."""
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        dep.checks = [*dep.checks, *results]
        if status == D.HELD:
            approval = new_approval(
                w,
                dep,
                "inconclusive",
                {"approvers": _held_approvers(dep), "required": 1, "self_approval": True},
            )
            move(w, dep, D.HELD, f"checks were inconclusive: approval {approval.id} decides")
            notify(
                w,
                dep,
                NoticeEvent.APPROVAL_REQUESTED,
                f"{dep.service.name} {version_of(dep.release)} in {dep.environment}: checks "
                "were inconclusive; approve to keep it, reject to roll it back",
                approval_id=approval.id,
            )
            return approval.id
        if status != D(dep.status):
            move(w, dep, status)
        return None


def _held_approvers(dep: Deployment) -> list[str]:
    config = environment_config(dep).approval
    return list(config.approvers) if config else ["*"]


def succeed(
    store: Store,
    deployment_id: int,
    *,
    switched_instance: dict[str, Any] | None = None,
    changes: Sequence[Change] = (),
) -> list[int]:
    """The deployment is healthy (and verified): it serves its environment now. ``changes`` is
    its commit range (for lead time). Returns the deployments queued next down the chain."""
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        now = utcnow()
        if switched_instance is not None:
            dep.instance = switched_instance
        dep.healthy_at = dep.healthy_at or now
        dep.served_at = dep.served_at or dep.healthy_at
        env = env_row(w, dep.service_id, dep.environment, dep.tier, lock=True)
        env.current_release_id, env.current_deployment_id = dep.release_id, dep.id
        env.verified_release_id = dep.release_id
        env.instance, env.healthy, env.since, env.updated_at = dep.instance, True, now, now
        env.url = _endpoint(dep) or env.url
        move(w, dep, D.SUCCEEDED)
        record_deployment_fact(w, dep, "succeeded", changes)
        version = version_of(dep.release)
        if dep.kind == DeploymentKind.ROLLBACK:
            _finish_rollback(w, dep, restored=True)
            return []
        notify(
            w,
            dep,
            NoticeEvent.DEPLOYMENT_SUCCEEDED,
            f"{dep.service.name} {version} is live in {dep.environment}",
        )
        pipeline = pipeline_of(dep.release.run)
        return [
            queue_deployment(
                w, dep.release, name, cfg.tier or "staging", trigger="auto", by=None
            ).id
            for name, cfg in pipeline.environments.items()
            if cfg.after == dep.environment
        ]


def _endpoint(dep: Deployment) -> str | None:
    value = dep.instance.get("endpoint")
    return str(value) if value else None


def _finish_rollback(w: Writer, rollback: Deployment, *, restored: bool) -> None:
    failed = w.session.get(Deployment, rollback.rollback_of) if rollback.rollback_of else None
    version = version_of(rollback.release)
    if failed is not None and failed.status == D.ROLLING_BACK:
        move(
            w,
            failed,
            D.ROLLED_BACK if restored else D.FAILED,
            f"{failed.reason}; rolled back to {version} by deployment {rollback.id}"
            if restored
            else f"{failed.reason}; the rollback (deployment {rollback.id}) failed too",
        )
        record_deployment_fact(w, failed, "rolled_back" if restored else "failed")
    if restored:
        notify(
            w,
            rollback,
            NoticeEvent.DEPLOYMENT_ROLLEDBACK,
            f"{rollback.service.name} {rollback.environment} is back on {version}",
            fields={"rolled back": f"deployment {rollback.rollback_of}"}
            if rollback.rollback_of
            else None,
        )
        for incident in w.session.scalars(
            select(Incident).where(
                Incident.service_id == rollback.service_id,
                Incident.environment == rollback.environment,
                Incident.status == IncidentStatus.OPEN,
                # Opened by the failed deployment, or by the monitor of what served.
                Incident.source.in_(("deployment", "monitor")),
            )
        ).all():
            # Resolved at the instant the rollback finished: one moment, not two readings of
            # the clock, so recovery is credited to the rollback that restored service.
            resolve_incident(
                w,
                incident,
                f"rollback deployment {rollback.id} restored {version}",
                at=rollback.finished_at,
            )


def fail(
    store: Store,
    deployment_id: int,
    reason: str,
    *,
    serving: bool,
    displaced: bool | None = None,
) -> int | None:
    """The deployment failed. ``serving`` says whether the failed release took traffic (it was
    switched in, or replaced the old one in place); ``displaced`` (default: ``serving``) whether
    the release that served before is gone, e.g. stopped by a recreate that then failed to start
    the new one. Applies the environment's failure policy; returns the rollback deployment to
    carry out, if any (already claimed for the caller)."""
    displaced = serving if displaced is None else displaced
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        dep.failed_at = dep.failed_at or utcnow()
        if serving or displaced:
            # Users met it (or lost what served before): a change failure, not one caught
            # before production traffic.
            dep.served_at = dep.served_at or dep.failed_at
        env = env_row(w, dep.service_id, dep.environment, dep.tier, lock=True)
        if dep.kind == DeploymentKind.ROLLBACK:
            move(w, dep, D.FAILED, reason)
            record_deployment_fact(w, dep, "failed")
            _finish_rollback(w, dep, restored=False)
            if serving and dep.instance:
                # The target put the release back before its checks failed: it is what runs
                # now (unhealthy), not the release it replaced.
                env.current_release_id, env.current_deployment_id = dep.release_id, dep.id
                env.instance, env.since = dep.instance, utcnow()
                env.url = _endpoint(dep) or env.url
            env.healthy, env.updated_at = False, utcnow()
            hold_environment(w, env, "conveyor", f"rollback deployment {dep.id} failed: {reason}")
            notify(w, dep, NoticeEvent.DEPLOYMENT_FAILED, _failure_summary(dep, reason))
            return None
        if serving:
            env.current_release_id, env.current_deployment_id = dep.release_id, dep.id
            env.instance, env.healthy, env.updated_at = dep.instance, False, utcnow()
        policy = environment_config(dep).on_failure
        if displaced and not serving:
            env.healthy, env.updated_at = False, utcnow()
        target = env.verified_release_id if displaced else None
        notify(w, dep, NoticeEvent.DEPLOYMENT_FAILED, _failure_summary(dep, reason))
        if displaced and dep.tier == "production":
            open_incident(
                w,
                service_id=dep.service_id,
                environment=dep.environment,
                title=f"{dep.service.name} {version_of(dep.release)} failed in "
                f"{dep.environment}: {reason}",
                source="deployment",
                deployment=dep,
            )
        if policy == "rollback" and target is not None and target != dep.release_id:
            move(w, dep, D.ROLLING_BACK, reason)
            release = w.session.get(Release, target)
            assert release is not None
            rollback = queue_deployment(
                w,
                release,
                dep.environment,
                dep.tier,
                trigger="failure",
                by="conveyor",
                kind=DeploymentKind.ROLLBACK,
                rollback_of=dep.id,
            )
            rollback.owner, rollback.started_at = dep.owner, utcnow()
            rollback.previous_release_id = dep.release_id
            move(w, rollback, D.DEPLOYING)
            return rollback.id
        if not displaced:
            reason = f"{reason}; {_kept(w, env)}"
        elif policy == "rollback":
            reason = f"{reason}; no earlier verified release to roll back to"
        move(w, dep, D.FAILED, reason)
        record_deployment_fact(w, dep, "failed")
        if policy == "hold":
            hold_environment(w, env, "conveyor", f"deployment {dep.id} failed: {reason}")
        return None


def _kept(w: Writer, env: EnvironmentState) -> str:
    if env.current_release_id is None:
        return "nothing was serving before"
    release = w.session.get(Release, env.current_release_id)
    assert release is not None
    return f"{version_of(release)} kept serving"


def _failure_summary(dep: Deployment, reason: str) -> str:
    return f"{dep.service.name} {version_of(dep.release)} failed in {dep.environment}: {reason}"


def record_serving(store: Store, deployment_id: int, instance: dict[str, Any]) -> None:
    """Traffic reaches the new release now (switched, or replaced in place): the environment
    serves it, not yet verified."""
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        now = utcnow()
        dep.instance, dep.healthy_at = instance, now
        dep.served_at = dep.served_at or now
        env = env_row(w, dep.service_id, dep.environment, dep.tier, lock=True)
        env.current_release_id, env.current_deployment_id = dep.release_id, dep.id
        env.instance, env.healthy, env.since, env.updated_at = instance, True, now, now
        env.url = _endpoint(dep) or env.url
        w.emit(
            EventType.ENVIRONMENT_SWITCHED,
            service=dep.service.name,
            environment=dep.environment,
            deployment=dep.id,
            release=dep.release_id,
        )


def record_restarted(
    store: Store, service: str, environment: str, instance: dict[str, Any]
) -> None:
    """After a server restart the serving release was gone and has been started again."""
    with store.write() as w:
        svc = service_named(w, service)
        env = env_row(w, svc.id, environment, "staging", lock=True)
        env.instance, env.updated_at = instance, utcnow()
        if env.current_deployment_id:
            dep = w.session.get(Deployment, env.current_deployment_id)
            if dep is not None:
                dep.instance = instance
        env.healthy, env.checked_at = None, None  # the monitor's next check says
        w.emit(EventType.ENVIRONMENT_RESTARTED, service=service, environment=environment)


def record_publication(store: Store, release_id: int, publication: dict[str, Any]) -> None:
    """Where the release was published (or why it could not be): written once."""
    with store.write() as w:
        release = w.session.get(Release, release_id)
        if release is None or release.publication.get("status") != "pending":
            return
        release.publication = publication
        ok = publication.get("status") == "published"
        w.emit(
            EventType.RELEASE_PUBLISHED if ok else EventType.RELEASE_PUBLISH_FAILED,
            service=release.service.name,
            run_id=release.run_id,
            release=release.id,
            **{k: v for k, v in publication.items() if k != "status"},
        )
