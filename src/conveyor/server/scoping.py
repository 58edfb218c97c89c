"""Service and environment limits of tokens and sessions, checked by every route that acts on a
service: the record a request names (a run, release, deployment, approval, incident) is looked up
first, and the request refused with 403 naming the service when the caller's limits leave it out.

A record that does not exist passes here: the route then answers its own 404. Reads are not
limited (see server.tokens).
"""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy import select

from conveyor.server.tokens import Identity
from conveyor.store.db import Store
from conveyor.store.models import (
    Approval,
    Deployment,
    Incident,
    Release,
    Run,
    Service,
    User,
)


def who(identity: Identity) -> str:
    return f"token {identity.name}" if identity.token_id else (identity.user or identity.name)


def check(
    identity: Identity, service: str | None, environment: str | None = None, action: str = "act on"
) -> None:
    """403 unless ``identity`` may act on ``service`` (in ``environment``, when it has one)."""
    if service is None or identity.may_act_on(service, environment):
        return
    where = service if environment is None else f"{service} {environment}"
    raise HTTPException(403, f"{who(identity)} may {action} {identity.limits()} only, not {where}")


def unlimited(identity: Identity, what: str) -> None:
    """Server-wide actions (people, imports) need a caller limited to no service."""
    if identity.limited:
        raise HTTPException(
            403,
            f"{who(identity)} is limited to {identity.limits()}: {what} needs a token "
            "without service limits",
        )


def of_user(store: Store, name: str) -> Identity:
    """A person's own limits (users table), for what they do without a token or a session of
    theirs: a Slack button. Unknown to the table: no limits (the users file has none)."""
    with store.session() as session:
        user = session.scalar(select(User).where(User.name == name))
        services = frozenset(user.services or ()) if user is not None else frozenset[str]()
        environments = frozenset(user.environments or ()) if user is not None else frozenset[str]()
    return Identity(0, name, name, frozenset(), services, environments)


def of_run(store: Store, run_id: int) -> str | None:
    with store.session() as session:
        return session.scalar(
            select(Service.name).join(Run, Run.service_id == Service.id).where(Run.id == run_id)
        )


def of_release(store: Store, release_id: int) -> str | None:
    with store.session() as session:
        return session.scalar(
            select(Service.name)
            .join(Release, Release.service_id == Service.id)
            .where(Release.id == release_id)
        )


def of_deployment(store: Store, deployment_id: int) -> tuple[str | None, str | None]:
    return _service_and_environment(store, Deployment, deployment_id)


def of_approval(store: Store, approval_id: int) -> tuple[str | None, str | None]:
    with store.session() as session:
        deployment_id = session.scalar(
            select(Approval.deployment_id).where(Approval.id == approval_id)
        )
    return of_deployment(store, deployment_id) if deployment_id is not None else (None, None)


def of_incident(store: Store, incident_id: int) -> tuple[str | None, str | None]:
    return _service_and_environment(store, Incident, incident_id)


def _service_and_environment(
    store: Store, model: type[Deployment] | type[Incident], row_id: int
) -> tuple[str | None, str | None]:
    """The service and environment of a deployment or an incident, or (None, None)."""
    with store.session() as session:
        row = session.execute(
            select(Service.name, model.environment)
            .join(model, model.service_id == Service.id)
            .where(model.id == row_id)
        ).first()
        return (row[0], row[1]) if row is not None else (None, None)
