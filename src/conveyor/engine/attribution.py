"""Attribution (design §6) ties an incident to the deployment that caused it:

- explicit: the alert's ``deployment`` label or annotation, or the ``deployment``, ``release``
  or ``commit`` a person gives;
- by window: the deployment of the service that was serving the incident's production-tier
  environment when the incident began, if it began within CONVEYOR_ATTRIBUTION_HOURS (48 by
  default) after that deployment finished;
- otherwise none: the incident counts for incident recovery, not for change failure rate.

The rule itself is conveyor.blame's (the one DORA and --explain apply); this module finds the
candidates in the store.

How it was attributed is kept on the incident (``data.attribution``), so DORA can explain it.

Recovery: when an incident is resolved, the time service was restored is recorded in
``data.recovery``: the first healthy rollback of its environment after it opened, or its
resolution, whichever came first.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.blame import Served, attribute
from conveyor.deploy_states import DeploymentKind, DeploymentStatus
from conveyor.engine.promotion import version_of
from conveyor.errors import ConveyorError, NotFound
from conveyor.settings import Settings
from conveyor.store.models import (
    ChangeFactRow,
    Deployment,
    DeploymentFactRow,
    EnvironmentState,
    Incident,
    Release,
    Service,
)

PRODUCTION = "production"
DEFAULT_ATTRIBUTION_HOURS = Settings().attribution_hours
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")

D = DeploymentStatus


# --- settings ---------------------------------------------------------------------------------


def attribution_window(hours: float = DEFAULT_ATTRIBUTION_HOURS) -> dt.timedelta:
    """How long after a deployment finished an incident is still blamed on it by window:
    ``hours`` (Settings.attribution_hours, CONVEYOR_ATTRIBUTION_HOURS)."""
    return dt.timedelta(hours=hours)


# --- attribution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Which deployment (and release) an incident is blamed on, how, and why, in words."""

    how: Literal["explicit", "window", "none"]
    detail: str
    deployment_id: int | None = None
    release_id: int | None = None

    def as_data(self) -> dict[str, Any]:
        return {"how": self.how, "detail": self.detail}


def _env_tier(session: Session, service_id: int, environment: str) -> str | None:
    return session.scalar(
        select(EnvironmentState.tier).where(
            EnvironmentState.service_id == service_id, EnvironmentState.name == environment
        )
    )


def served(dep: Deployment) -> Served:
    """``dep`` as the attribution rule sees it (conveyor.blame)."""
    assert dep.served_at is not None
    return Served(
        key=str(dep.id),
        label=f"deployment {dep.id} ({version_of(dep.release)}, {dep.kind})",
        rollback=dep.kind == DeploymentKind.ROLLBACK,
        served=dep.served_at.timestamp(),
        finished=dep.finished_at.timestamp() if dep.finished_at is not None else None,
    )


def attribute_by_window(
    session: Session,
    service_id: int,
    environment: str | None,
    began: dt.datetime,
    window: dt.timedelta,
) -> Attribution:
    """The deployment serving ``environment`` (production tier; any production environment
    of the service when the incident names none) when the incident began, if it began within
    ``window`` after that deployment finished: conveyor.blame decides, as DORA does."""
    if environment is not None:
        tier = _env_tier(session, service_id, environment)
        if tier is not None and tier != PRODUCTION:
            return Attribution(
                "none", f"{environment} is a {tier}-tier environment; only production is attributed"
            )
    where = [
        Deployment.service_id == service_id,
        Deployment.served_at.is_not(None),
        Deployment.served_at <= began,
        Deployment.tier == PRODUCTION,
    ]
    if environment is not None:
        where.append(Deployment.environment == environment)
    live = session.scalar(
        select(Deployment)
        .where(*where)
        .order_by(Deployment.served_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    blame = attribute(
        began.timestamp(),
        named=None,
        serving=[served(live)] if live is not None else [],
        window=window.total_seconds(),
        where=environment or "production",
    )
    if blame.key is None or live is None:
        return Attribution("none", blame.detail)
    return Attribution(blame.how, blame.detail, live.id, live.release_id)


class _OfService(Protocol):
    @property
    def service_id(self) -> int: ...


RowT = TypeVar("RowT", bound=_OfService)


def _of_service(
    session: Session, model: type[RowT], row_id: int, service: Service, what: str
) -> RowT:
    """The ``model`` row ``row_id`` if it is one of ``service``'s, else NotFound naming ``what``
    and the command that lists them."""
    row = session.get(model, row_id)
    if row is None or row.service_id != service.id:
        raise NotFound(
            f"there is no {what} {row_id} of {service.name}",
            hint=f"`conveyor {what}s --service {service.name}` lists them",
        )
    return row


def explicit_deployment(
    session: Session, service: Service, deployment_id: int, why: str
) -> Attribution:
    dep = _of_service(session, Deployment, deployment_id, service, "deployment")
    return Attribution(
        "explicit",
        f"{why}: deployment {dep.id} ({version_of(dep.release)} to {dep.environment})",
        dep.id,
        dep.release_id,
    )


def _deployment_of_release(
    session: Session, release: Release, environment: str | None
) -> Deployment | None:
    """The deployment that brought ``release`` to ``environment`` (its first that served)."""
    if environment is None:
        return None
    query = select(Deployment).where(
        Deployment.release_id == release.id,
        Deployment.environment == environment,
        Deployment.kind == DeploymentKind.DEPLOY,
    )
    served = session.scalar(
        query.where(Deployment.served_at.is_not(None)).order_by(Deployment.id).limit(1)
    )
    return served or session.scalar(query.order_by(Deployment.id.desc()).limit(1))


def explicit_release(
    session: Session, service: Service, environment: str | None, release_id: int, why: str
) -> Attribution:
    release = _of_service(session, Release, release_id, service, "release")
    dep = _deployment_of_release(session, release, environment)
    if dep is None:
        where = environment or "any environment"
        return Attribution(
            "explicit",
            f"{why}: release {release.id} ({version_of(release)}), never deployed to {where}",
            None,
            release.id,
        )
    return Attribution(
        "explicit",
        f"{why}: release {release.id} ({version_of(release)}), deployment {dep.id}",
        dep.id,
        release.id,
    )


def explicit_commit(
    session: Session, service: Service, environment: str | None, commit: str, why: str
) -> Attribution:
    """The deployment that first brought ``commit`` to the environment: a release built from
    it, else a deployment whose commit range (DORA's change facts) holds it."""
    commit = commit.strip().lower()
    if not _COMMIT.match(commit):
        raise ConveyorError(f"{commit!r} is not a commit id (7 to 64 hex digits)")
    releases = session.scalars(
        select(Release)
        .where(Release.service_id == service.id, Release.sha.startswith(commit))
        .order_by(Release.id)
    ).all()
    if len({r.sha for r in releases}) > 1:
        raise ConveyorError(f"commit {commit} is ambiguous: give more of its digits")
    for release in releases:
        dep = _deployment_of_release(session, release, environment)
        if dep is not None:
            return Attribution(
                "explicit",
                f"{why}: commit {commit[:12]} is release {release.id}, deployment {dep.id}",
                dep.id,
                release.id,
            )
    if environment is not None:
        dep_id = session.scalar(
            select(DeploymentFactRow.deployment_id)
            .join(ChangeFactRow, ChangeFactRow.fact_id == DeploymentFactRow.id)
            .where(
                DeploymentFactRow.service == service.name,
                DeploymentFactRow.environment == environment,
                DeploymentFactRow.kind == "deploy",
                DeploymentFactRow.deployment_id.is_not(None),
                ChangeFactRow.sha.startswith(commit),
            )
            .order_by(DeploymentFactRow.finished_at)
            .limit(1)
        )
        dep = session.get(Deployment, dep_id) if dep_id is not None else None
        if dep is not None:
            return Attribution(
                "explicit",
                f"{why}: commit {commit[:12]} reached {environment} with deployment {dep.id}",
                dep.id,
                dep.release_id,
            )
    if releases:
        return Attribution(
            "explicit",
            f"{why}: commit {commit[:12]} is release {releases[0].id}, never deployed to "
            f"{environment or 'any environment'}",
            None,
            releases[0].id,
        )
    raise NotFound(
        f"commit {commit} is in no release or deployment of {service.name}"
        + (f" to {environment}" if environment else "")
    )


# --- recovery ---------------------------------------------------------------------------------


def recovery_of(
    session: Session, incident: Incident, resolved_at: dt.datetime | None
) -> dict[str, Any] | None:
    """When service was restored: the first healthy rollback of the incident's environment
    after it opened, or ``resolved_at``, whichever came first (None: neither yet)."""
    restored_at, by = resolved_at, "resolved"
    if incident.environment is not None:
        query = select(Deployment).where(
            Deployment.service_id == incident.service_id,
            Deployment.environment == incident.environment,
            Deployment.kind == DeploymentKind.ROLLBACK,
            Deployment.status != D.FAILED,
            Deployment.healthy_at.is_not(None),
            Deployment.healthy_at >= incident.opened_at,
        )
        if resolved_at is not None:
            query = query.where(Deployment.healthy_at <= resolved_at)
        rollback = session.scalar(query.order_by(Deployment.healthy_at).limit(1))
        if rollback is not None and rollback.healthy_at is not None:
            restored_at, by = rollback.healthy_at, f"rollback deployment {rollback.id}"
    if restored_at is None:
        return None
    return {
        "restored_at": restored_at.isoformat(),
        "restored_by": by,
        "seconds": round((restored_at - incident.opened_at).total_seconds(), 3),
    }
