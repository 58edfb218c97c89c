"""The promotion controller's decisions: which release goes where next, and what a deployment's
outcome means for its environment.

Everything here reads and writes the store only; the delivery package does the I/O (targets,
checks) and reports back through these functions. Each function is one transaction, checked
against engine.deploy_states and written with its events (and outbox notices) before anyone
hears of it.

Rules (design §5): one active deployment per environment; the rest wait in FIFO order, rollbacks
first; a hold stops promotions but not rollbacks; `supersede: true` lets the newest queued release
skip older ones, visibly; a release reaches an environment only after the one named by `after:`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from conveyor.deploy_states import (
    ApprovalStatus,
    DeploymentKind,
    DeploymentStatus,
    check_transition,
)
from conveyor.engine.notices import queue_notices
from conveyor.engine.promotion_rules import (
    Action,
    Active,
    Cancel,
    Candidate,
    RequestApproval,
    Snapshot,
    Start,
    Supersede,
    Unreadable,
    Wait,
    decide,
)
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType, NoticeEvent, approval_event, deployment_event
from conveyor.spec.fields import SKIP_GRAPH_CHECKS
from conveyor.spec.models import Environment, Pipeline
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    Approval,
    Deployment,
    EnvironmentState,
    Event,
    Release,
    Run,
    Service,
    utcnow,
)

D = DeploymentStatus
EXECUTING = frozenset({D.DEPLOYING, D.CHECKING, D.VERIFYING, D.HELD})
# How often a deployment is carried out again after the server died during it; the next death
# fails it ("interrupted"), so a release that kills its server every time ends clearly.
MAX_RESUMPTIONS = 3


def pipeline_of(run: Run) -> Pipeline:
    """The pipeline file the release was built from: it also says how to deploy it."""
    return Pipeline.model_validate(run.pipeline, context={SKIP_GRAPH_CHECKS: True})


def environment_config(deployment: Deployment) -> Environment:
    pipeline = pipeline_of(deployment.release.run)
    env = pipeline.environments.get(deployment.environment)
    if env is None:  # a rollback to a release whose file had no such environment
        raise ConveyorError(
            f"release {deployment.release_id}'s conveyor.yml has no environment "
            f"{deployment.environment}"
        )
    return env


def version_of(release: Release) -> str:
    return f"r{release.id}-{release.sha[:7]}"


def env_row(
    w: Writer, service_id: int, name: str, tier: str, *, lock: bool = False
) -> EnvironmentState:
    query = select(EnvironmentState).where(
        EnvironmentState.service_id == service_id, EnvironmentState.name == name
    )
    row = w.session.scalar(query.with_for_update() if lock else query)
    if row is None:
        row = EnvironmentState(
            service_id=service_id,
            name=name,
            tier=tier,
            instance={},
            held=False,
            updated_at=utcnow(),
        )
        w.session.add(row)
        w.session.flush()
    return row


def service_named(w: Writer, name: str) -> Service:
    service = w.session.scalar(select(Service).where(Service.name == name))
    if service is None:
        raise NotFound(f"there is no service {name}", hint="`conveyor service list` lists them")
    return service


def about(dep: Deployment) -> dict[str, Any]:
    """What an event about ``dep`` names first: its service, itself, its environment and its
    release."""
    return {
        "service": dep.service.name,
        "deployment": dep.id,
        "environment": dep.environment,
        "release": dep.release_id,
    }


def move(w: Writer, dep: Deployment, status: DeploymentStatus, reason: str | None = None) -> None:
    was = DeploymentStatus(dep.status)
    check_transition("deployment", was, status)
    dep.status = status
    if reason is not None:
        dep.reason = reason
    elif was in (D.QUEUED, D.AWAITING_APPROVAL):
        dep.reason = None  # what it waited for is over: "waiting for approval 3" is no more
    if status.terminal:
        dep.finished_at = utcnow()
    w.emit(deployment_event(status), **about(dep), kind=dep.kind, reason=reason)


def notify(w: Writer, dep: Deployment, event: NoticeEvent, summary: str, **extra: Any) -> None:
    release = dep.release
    queue_notices(
        w,
        pipeline_of(release.run),
        service_id=dep.service_id,
        event=event,
        service=dep.service.name,
        summary=summary,
        environment=dep.environment,
        release=version_of(release),
        sha=release.sha,
        deployment_id=dep.id,
        **extra,
    )


def queue_deployment(
    w: Writer,
    release: Release,
    environment: str,
    tier: str,
    *,
    trigger: str,
    by: str | None,
    kind: DeploymentKind | str = DeploymentKind.DEPLOY,
    rollback_of: int | None = None,
) -> Deployment:
    kind = DeploymentKind(kind)  # engine.monitoring still passes the text
    dep = Deployment(
        service_id=release.service_id,
        environment=environment,
        tier=tier,
        release_id=release.id,
        kind=kind,
        status=D.QUEUED,
        trigger=trigger,
        requested_by=by,
        rollback_of=rollback_of,
        created_at=utcnow(),
        checks=[],
        log=[],
        instance={},
    )
    w.session.add(dep)
    w.session.flush()
    env_row(w, release.service_id, environment, tier)
    w.emit(EventType.DEPLOYMENT_QUEUED, **about(dep), kind=kind, trigger=trigger, actor=by)
    return dep


def queue_first_environments(w: Writer, release: Release) -> list[Deployment]:
    """A new release enters every environment that has no `after:` (called by close_run)."""
    try:
        pipeline = pipeline_of(release.run)
    except ValidationError:  # runs recorded without a usable file (tests, imports) deploy nowhere
        return []
    needs_publish = pipeline.publish is not None or any(j.images for j in pipeline.jobs.values())
    release.publication = {"status": "pending" if needs_publish else "none"}
    return [
        queue_deployment(w, release, name, env.tier or "staging", trigger="auto", by=None)
        for name, env in pipeline.environments.items()
        if env.after is None
    ]


def _active(w: Writer, service_id: int, environment: str) -> Deployment | None:
    return w.session.scalar(
        select(Deployment)
        .where(
            Deployment.service_id == service_id,
            Deployment.environment == environment,
            Deployment.status.in_([s.value for s in D if s.active]),
        )
        .order_by(Deployment.id)
        .limit(1)
    )


def _reached(w: Writer, release_id: int, environment: str) -> bool:
    return (
        w.session.scalar(
            select(Deployment.id)
            .where(
                Deployment.release_id == release_id,
                Deployment.environment == environment,
                Deployment.status == D.SUCCEEDED,
            )
            .limit(1)
        )
        is not None
    )


@dataclass(frozen=True)
class Started:
    """A deployment this controller must now carry out."""

    deployment_id: int
    kind: DeploymentKind


def start_next(store: Store, owner: str, now: dt.datetime | None = None) -> list[Started]:
    """Move each environment's queue on: expire approvals, supersede, gate, and claim the
    deployments that may start now for ``owner``."""
    try:
        return _start_next(store, owner, now or utcnow())
    except IntegrityError:
        # Another server claimed a deployment of one of these environments in between: the
        # database refused the second claim (uq_deployments_executing) and this whole
        # transaction; the next tick sees who won.
        return []


def claim(store: Store, deployment_id: int, dead_owner: str | None, owner: str) -> bool:
    """Take over a deployment a dead process left mid-way; False if another server did."""
    with store.write() as w:
        taken = cast(
            "CursorResult[Any]",
            w.session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id, Deployment.owner == dead_owner)
                .values(owner=owner)
                .execution_options(synchronize_session=False)
            ),
        )
        return taken.rowcount == 1


def _start_next(store: Store, owner: str, now: dt.datetime) -> list[Started]:
    started: list[Started] = []
    with store.write() as w:
        _expire_approvals(w, now)
        waiting = w.session.scalars(
            select(Deployment)
            .where(Deployment.status.in_([D.QUEUED.value, D.AWAITING_APPROVAL.value]))
            .order_by(Deployment.id)
            # The snapshot reads every queued deployment's release and its file: in one go.
            .options(selectinload(Deployment.release).selectinload(Release.run))
        ).all()
        envs: dict[tuple[int, str], list[Deployment]] = {}
        for dep in waiting:
            envs.setdefault((dep.service_id, dep.environment), []).append(dep)
        for (service_id, name), deps in envs.items():
            env = env_row(w, service_id, name, deps[0].tier, lock=True)
            snapshot, rows = _snapshot(w, env, deps)
            for action in decide(snapshot):
                chosen = _apply(w, action, rows)
                if chosen is not None:
                    _start(w, chosen, env, owner)
                    started.append(Started(chosen.id, DeploymentKind(chosen.kind)))
    return started


def _start(w: Writer, dep: Deployment, env: EnvironmentState, owner: str) -> None:
    dep.owner, dep.started_at = owner, utcnow()
    dep.previous_release_id = env.current_release_id
    move(w, dep, D.DEPLOYING)
    if dep.kind == DeploymentKind.DEPLOY:
        notify(
            w,
            dep,
            NoticeEvent.DEPLOYMENT_STARTED,
            f"{dep.service.name} {version_of(dep.release)} is being deployed to {dep.environment}",
        )


def _snapshot(
    w: Writer, env: EnvironmentState, deps: Sequence[Deployment]
) -> tuple[Snapshot, dict[int, Deployment]]:
    """What promotion_rules.decide needs to know of this environment (``deps``: its queued
    and waiting deployments, oldest first), and the rows its actions name."""
    rows = {d.id: d for d in deps}
    active_row = _active(w, env.service_id, env.name)
    active = None
    if active_row is not None:
        rows[active_row.id] = active_row
        status = D(active_row.status)
        active = Active(
            active_row.id,
            status,
            DeploymentKind(active_row.kind),
            approved=status == D.AWAITING_APPROVAL and _approved(w, active_row),
        )
    queued = [d for d in deps if d.status == D.QUEUED]
    newest = max((d.id for d in queued if d.kind == DeploymentKind.DEPLOY), default=None)
    return (
        Snapshot(
            environment=env.name,
            queued=tuple(_candidate(d, strict=d.id == newest) for d in queued),
            active=active,
            held=env.held,
            held_by=env.held_by,
            hold_reason=env.hold_reason,
        ),
        rows,
    )


def _candidate(dep: Deployment, *, strict: bool) -> Candidate:
    """A queued deployment as the decision sees it. A promotion's environment entry is read
    from its release's file; an unreadable one fails the decision when a rule needs it (at
    once for the newest promotion, whose ``supersede`` every decision reads)."""
    kind = DeploymentKind(dep.kind)
    publication = dep.release.publication
    candidate = Candidate(
        dep.id,
        dep.release_id,
        kind,
        publication=publication.get("status"),
        publication_error=publication.get("error"),
    )
    if kind != DeploymentKind.DEPLOY:
        return candidate
    try:
        config = environment_config(dep)
    except (ConveyorError, ValidationError) as e:
        if strict:
            raise
        return dataclasses.replace(candidate, config_error=e)
    approval = config.approval.model_dump() if config.approval is not None else None
    return dataclasses.replace(candidate, supersede=config.supersede, approval=approval)


def _apply(w: Writer, action: Action, rows: Mapping[int, Deployment]) -> Deployment | None:
    """Carry one of decide()'s actions out; returns the deployment to start, if that is it."""
    dep = rows[action.deployment_id]
    match action:
        case Start():
            return dep
        case Supersede(withdraw_approvals=withdraw):
            if withdraw:
                _withdraw_approvals(w, dep, action.reason)
            move(w, dep, D.SUPERSEDED, action.reason)
        case Wait(reason=reason):
            if dep.reason != reason:
                dep.reason = reason
        case Cancel(reason=reason):
            move(w, dep, D.CANCELLED, reason)
        case RequestApproval(config=config):
            _request_approval(w, dep, dict(config))
        case Unreadable(error=error):
            raise error
    return None


def _approved(w: Writer, dep: Deployment) -> bool:
    status = w.session.scalar(
        select(Approval.status)
        .where(Approval.deployment_id == dep.id, Approval.kind == "approval")
        .order_by(Approval.id.desc())
        .limit(1)
    )
    return status == ApprovalStatus.APPROVED


def _excluded(run: Run) -> list[str]:
    """The release commit's author, committer and pusher, kept with the approval; the rule
    itself looks at every commit of the range being deployed (engine.approvals)."""
    commit = run.commit
    keys = ("author_name", "author_email", "committer_name", "committer_email", "pusher")
    people = [commit.get(k) for k in keys]
    return sorted({str(p).strip().lower() for p in people if p})


def _request_approval(w: Writer, dep: Deployment, config: dict[str, Any]) -> None:
    approval = new_approval(w, dep, "approval", config)
    move(w, dep, D.AWAITING_APPROVAL, f"waiting for approval {approval.id}")
    notify(
        w,
        dep,
        NoticeEvent.APPROVAL_REQUESTED,
        f"{dep.service.name} {version_of(dep.release)} waits for approval to deploy to "
        f"{dep.environment} ({approval.required} of {', '.join(approval.approvers)})",
        approval_id=approval.id,
    )


def new_approval(w: Writer, dep: Deployment, kind: str, config: dict[str, Any]) -> Approval:
    now = utcnow()
    approval = Approval(
        deployment_id=dep.id,
        kind=kind,
        status=ApprovalStatus.PENDING,
        approvers=list(config.get("approvers") or []),
        required=int(config.get("required", 1)),
        self_approval=bool(config.get("self_approval", False)),
        excluded=_excluded(dep.release.run),
        on_timeout=str(config.get("on_timeout", "reject")),
        requested_at=now,
        deadline=now + dt.timedelta(seconds=float(config.get("timeout", 86400.0))),
    )
    w.session.add(approval)
    w.session.flush()
    w.emit(
        EventType.APPROVAL_REQUESTED,
        approval=approval.id,
        **about(dep),
        kind=kind,
        approvers=approval.approvers,
        required=approval.required,
    )
    return approval


def _withdraw_approvals(w: Writer, dep: Deployment, reason: str) -> None:
    for approval in w.session.scalars(
        select(Approval).where(
            Approval.deployment_id == dep.id, Approval.status == ApprovalStatus.PENDING
        )
    ):
        close_approval(w, approval, ApprovalStatus.WITHDRAWN, reason)


def close_approval(w: Writer, approval: Approval, status: ApprovalStatus, reason: str) -> None:
    check_transition("approval", ApprovalStatus(approval.status), status)
    approval.status, approval.reason, approval.decided_at = status, reason, utcnow()
    w.emit(
        approval_event(status),
        service=approval.deployment.service.name,
        approval=approval.id,
        deployment=approval.deployment_id,
        reason=reason,
    )


def _expire_approvals(w: Writer, now: dt.datetime) -> None:
    for approval in w.session.scalars(
        select(Approval).where(Approval.status == ApprovalStatus.PENDING, Approval.deadline < now)
    ).all():
        dep = approval.deployment
        if approval.on_timeout == "approve":
            close_approval(
                w, approval, ApprovalStatus.APPROVED, "timed out: approved (on_timeout: approve)"
            )
            continue
        close_approval(w, approval, ApprovalStatus.EXPIRED, "timed out: rejected by policy")
        if approval.kind == "approval" and dep.status == D.AWAITING_APPROVAL:
            move(w, dep, D.REJECTED, f"approval {approval.id} timed out")


# --- shared by engine.outcomes -----------------------------------------------------------


def get_deployment(w: Writer, deployment_id: int) -> Deployment:
    dep = w.session.get(Deployment, deployment_id)
    if dep is None:
        raise NotFound(f"there is no deployment {deployment_id}")
    return dep


# --- what people ask for ----------------------------------------------------------------------


def promote(store: Store, release_id: int, environment: str, by: str) -> int:
    """Queue ``release`` for ``environment`` by hand; gates (after, hold, approval) still hold."""
    with store.write() as w:
        release = w.session.get(Release, release_id)
        if release is None:
            raise NotFound(
                f"there is no release {release_id}", hint="`conveyor releases` lists them"
            )
        config = pipeline_of(release.run).environments.get(environment)
        if config is None:
            names = ", ".join(pipeline_of(release.run).environments) or "none"
            raise ConveyorError(
                f"release {release_id}'s conveyor.yml has no environment {environment} "
                f"(it has: {names})"
            )
        if config.after and not _reached(w, release_id, config.after):
            raise ConveyorError(
                f"release {release_id} has not reached {config.after} yet; {environment} comes "
                f"after {config.after}",
                hint=f"conveyor promote {release_id} {config.after}",
            )
        pending = w.session.scalar(
            select(Deployment.id).where(
                Deployment.release_id == release_id,
                Deployment.environment == environment,
                Deployment.status.in_([s.value for s in D if not s.terminal]),
            )
        )
        if pending is not None:
            raise ConveyorError(
                f"release {release_id} is already on its way to {environment} "
                f"(deployment {pending})"
            )
        return queue_deployment(
            w, release, environment, config.tier or "staging", trigger="manual", by=by
        ).id


def rollback(store: Store, service: str, environment: str, by: str, to: int | None = None) -> int:
    """Queue a rollback of ``environment`` to release ``to`` (default: the last release that
    succeeded there before the current one). Rollbacks skip holds, approvals and the queue."""
    with store.write() as w:
        svc = service_named(w, service)
        env = w.session.scalar(
            select(EnvironmentState).where(
                EnvironmentState.service_id == svc.id, EnvironmentState.name == environment
            )
        )
        if env is None or env.current_release_id is None:
            raise ConveyorError(f"nothing has been deployed to {service} {environment} yet")
        history = w.session.scalars(
            select(Deployment)
            .where(
                Deployment.service_id == svc.id,
                Deployment.environment == environment,
                Deployment.status == D.SUCCEEDED,
            )
            .order_by(Deployment.id.desc())
        ).all()
        candidates = [d.release for d in history if d.release_id != env.current_release_id]
        if to is None:
            if not candidates:
                raise ConveyorError(
                    f"{service} {environment} has no earlier release to roll back to",
                    hint="only releases that succeeded there before can be restored",
                )
            release = candidates[0]
        else:
            match = [r for r in candidates if r.id == to]
            if not match:
                raise ConveyorError(
                    f"release {to} never succeeded in {service} {environment} "
                    "(or it is the one serving now)",
                    hint=f"`conveyor envs {service}` shows what runs where",
                )
            release = match[0]
        return queue_deployment(
            w,
            release,
            environment,
            env.tier,
            trigger="rollback",
            by=by,
            kind=DeploymentKind.ROLLBACK,
            rollback_of=env.current_deployment_id,
        ).id


def hold_environment(w: Writer, env: EnvironmentState, by: str, reason: str) -> None:
    env.held, env.held_by, env.hold_reason, env.updated_at = True, by, reason, utcnow()
    w.emit(
        EventType.ENVIRONMENT_HELD,
        service=env.service.name,
        environment=env.name,
        actor=by,
        reason=reason,
    )


def hold(store: Store, service: str, environment: str, by: str, reason: str | None) -> None:
    with store.write() as w:
        svc = service_named(w, service)
        env = _known_env(w, svc, environment)
        hold_environment(w, env, by, reason or "no reason given")


def unhold(store: Store, service: str, environment: str, by: str) -> None:
    with store.write() as w:
        svc = service_named(w, service)
        env = _known_env(w, svc, environment)
        if not env.held:
            raise ConveyorError(f"{service} {environment} is not held")
        env.held, env.held_by, env.hold_reason, env.updated_at = False, None, None, utcnow()
        w.emit(EventType.ENVIRONMENT_UNHELD, service=service, environment=environment, actor=by)


def _known_env(w: Writer, svc: Service, environment: str) -> EnvironmentState:
    release = w.session.scalar(
        select(Release).where(Release.service_id == svc.id).order_by(Release.id.desc()).limit(1)
    )
    pipeline = pipeline_of(release.run) if release else None
    if pipeline is None or environment not in pipeline.environments:
        known = ", ".join(pipeline.environments) if pipeline else "none yet"
        raise NotFound(f"service {svc.name} has no environment {environment} (it has: {known})")
    return env_row(w, svc.id, environment, pipeline.environments[environment].tier or "staging")


def cancel_deployment(store: Store, deployment_id: int, by: str) -> None:
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        status = DeploymentStatus(dep.status)
        if status not in (D.QUEUED, D.AWAITING_APPROVAL):
            raise ConveyorError(
                f"deployment {deployment_id} is {status.value}; only queued or waiting "
                "deployments can be cancelled (use `conveyor rollback` to undo a live one)"
            )
        _withdraw_approvals(w, dep, f"cancelled by {by}")
        move(w, dep, D.CANCELLED, f"cancelled by {by}")


def interrupted(
    store: Store, host: str, owner_alive: Callable[[str | None], bool]
) -> list[tuple[int, dict[str, Any], str | None]]:
    """Deployments a dead process on ``host`` left mid-way: returned (id, candidate instance,
    dead owner) so the controller can take them over. Only this host's: what a target started
    lives on the machine that started it."""
    with store.session() as session:
        rows = session.scalars(
            select(Deployment).where(Deployment.status.in_([s.value for s in EXECUTING]))
        ).all()
        return [
            (d.id, dict(d.instance), d.owner)
            for d in rows
            if (d.owner or "").partition(":")[0] == host and not owner_alive(d.owner)
        ]


def resumptions(w: Writer, dep: Deployment) -> int:
    """How often ``dep`` was carried out again after a server died during it (its
    ``deployment.resumed`` events: the append-only log is the count, no column needed)."""
    events = w.session.scalars(
        select(Event).where(
            Event.type == EventType.DEPLOYMENT_RESUMED, Event.service == dep.service.name
        )
    )
    return sum(1 for ev in events if ev.data.get("deployment") == dep.id)


def resume(store: Store, deployment_id: int) -> int | None:
    """A dead server left ``deployment_id`` mid-way (already claimed by the caller): record that
    it is carried out again from the start (back to ``deploying``; a pending approval of
    inconclusive checks is withdrawn, the checks run again). Returns the resumption's number,
    or None if it was resumed MAX_RESUMPTIONS times already (the caller fails it)."""
    with store.write() as w:
        dep = get_deployment(w, deployment_id)
        attempt = resumptions(w, dep) + 1
        if attempt > MAX_RESUMPTIONS:
            return None
        phase = D(dep.status)
        reason = (
            f"the server stopped while it was {phase.value}: carried out again "
            f"(resumption {attempt} of {MAX_RESUMPTIONS})"
        )
        if phase == D.HELD:
            _withdraw_approvals(w, dep, "the server stopped: the checks run again")
        if phase == D.DEPLOYING:
            dep.reason = reason
        else:
            move(w, dep, D.DEPLOYING, reason)
        w.emit(EventType.DEPLOYMENT_RESUMED, **about(dep), attempt=attempt, phase=phase.value)
        return attempt


def expire_approvals(store: Store) -> None:
    with store.write() as w:
        _expire_approvals(w, utcnow())
