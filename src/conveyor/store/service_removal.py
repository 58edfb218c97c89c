"""Removing a service: its registration and everything built from it (runs with their jobs,
logs and artifacts, releases, deployments with their approvals, environments, incidents,
notices, secrets). What happened stays on record: the event log (the audit) and the DORA
history of its deployments are kept, and teams keep naming it (a team may name services
Conveyor never built).

Refused while the service has a run or a deployment in progress: removing it under a runner or
a target would leave them acting on rows that are gone."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from conveyor.deploy_states import DEPLOYMENT_OPEN
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.states import RUN_TERMINAL
from conveyor.store.db import Store
from conveyor.store.models import (
    Approval,
    ApprovalDecision,
    Artifact,
    Deployment,
    EnvironmentState,
    Incident,
    Job,
    LogLine,
    Notification,
    Release,
    Run,
    Secret,
    Service,
    Step,
    StoreUsage,
)
from conveyor.store.retention import LOGS


@dataclass(frozen=True)
class ServiceRemoval:
    """What removing a service takes with it (or took)."""

    service: str
    repository: str
    runs: int
    releases: int
    deployments: int
    environments: int
    incidents: int
    secrets: int
    # Open work that stops a removal: "deployment 7 (deploying to production)", "run 12 (running)".
    in_progress: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """How many of each kind it takes: every count field, in the order declared (a count
        added above is reported without being listed again here)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}


def _count(session: Session, query: Select[int]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _service(session: Session, name: str) -> Service:
    svc = session.scalar(select(Service).where(Service.name == name))
    if svc is None:
        known = session.scalars(select(Service.name).order_by(Service.name)).all()
        raise NotFound(
            f"no service named {name!r}",
            hint=f"known services: {', '.join(known)}" if known else "no service is registered",
        )
    return svc


def what_removal_takes(session: Session, name: str) -> ServiceRemoval:
    svc = _service(session, name)
    open_deployments = session.execute(
        select(Deployment.id, Deployment.status, Deployment.environment)
        .where(Deployment.service_id == svc.id, Deployment.status.in_(DEPLOYMENT_OPEN))
        .order_by(Deployment.id)
    ).all()
    open_runs = session.execute(
        select(Run.id, Run.status)
        .where(Run.service_id == svc.id, Run.status.not_in(RUN_TERMINAL))
        .order_by(Run.id)
    ).all()
    return ServiceRemoval(
        service=svc.name,
        repository=svc.repository,
        runs=_count(session, select(Run.id).where(Run.service_id == svc.id)),
        releases=_count(session, select(Release.id).where(Release.service_id == svc.id)),
        deployments=_count(session, select(Deployment.id).where(Deployment.service_id == svc.id)),
        environments=_count(
            session, select(EnvironmentState.id).where(EnvironmentState.service_id == svc.id)
        ),
        incidents=_count(session, select(Incident.id).where(Incident.service_id == svc.id)),
        secrets=_count(session, select(Secret.id).where(Secret.service == svc.name)),
        in_progress=tuple(
            [f"deployment {i} ({status} in {env})" for i, status, env in open_deployments]
            + [f"run {i} ({status})" for i, status in open_runs]
        ),
    )


def remove_service(store: Store, name: str, by: str) -> ServiceRemoval:
    """Remove the service ``name`` and what was built from it, in one transaction; refused
    (nothing removed) while a run or a deployment of it is in progress."""
    with store.write() as w:
        session = w.session
        removal = what_removal_takes(session, name)
        if removal.in_progress:
            raise ConveyorError(
                f"service {name} has work in progress: {', '.join(removal.in_progress)}",
                hint="wait for it to end, or cancel it (`conveyor cancel RUN`), then remove it",
            )
        svc = _service(session, name)
        runs = select(Run.id).where(Run.service_id == svc.id)
        jobs = select(Job.id).where(Job.run_id.in_(runs))
        deployments = select(Deployment.id).where(Deployment.service_id == svc.id)
        approvals = select(Approval.id).where(Approval.deployment_id.in_(deployments))
        freed = int(session.scalar(select(func.sum(Job.log_bytes)).where(Job.id.in_(jobs))) or 0)
        # Children before their parents: the foreign keys are enforced.
        for statement in (
            delete(ApprovalDecision).where(ApprovalDecision.approval_id.in_(approvals)),
            delete(Approval).where(Approval.deployment_id.in_(deployments)),
            delete(Notification).where(Notification.service_id == svc.id),
            delete(Incident).where(Incident.service_id == svc.id),
            delete(EnvironmentState).where(EnvironmentState.service_id == svc.id),
            delete(Deployment).where(Deployment.service_id == svc.id),
            delete(Release).where(Release.service_id == svc.id),
            delete(Artifact).where(Artifact.run_id.in_(runs)),
            delete(LogLine).where(LogLine.job_id.in_(jobs)),
            delete(Step).where(Step.job_id.in_(jobs)),
            delete(Job).where(Job.run_id.in_(runs)),
            delete(Run).where(Run.service_id == svc.id),
            delete(Secret).where(Secret.service == svc.name),
        ):
            session.execute(statement, execution_options={"synchronize_session": False})
        if freed:
            session.execute(
                update(StoreUsage)
                .where(StoreUsage.name == LOGS)
                .values(bytes=StoreUsage.bytes - freed),
                execution_options={"synchronize_session": False},
            )
        session.delete(svc)
        w.emit(
            EventType.SERVICE_REMOVED,
            service=name,
            repository=removal.repository,
            by=by,
            **removal.counts(),
        )
    return removal
