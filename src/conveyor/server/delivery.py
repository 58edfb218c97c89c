"""Delivery API: environments, deployments, promotion, rollback, holds, approvals (also from a
Slack button), incidents, users and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from conveyor.delivery.authorship import ChangeReader
from conveyor.deploy_states import DeploymentStatus
from conveyor.engine import approvals, promotion
from conveyor.errors import ConveyorError, NotFound
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.runs import run_filter
from conveyor.server.schemas import delivery as schemas
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.incidents import IncidentListed
from conveyor.server.tokens import Identity
from conveyor.store.models import Approval
from conveyor.views import delivery as dq
from conveyor.views.runs import RunFilter

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]
Trigger = Annotated[Identity, Depends(require("trigger"))]
Approver = Annotated[Identity, Depends(require("approve"))]
Admin = Annotated[Identity, Depends(require("admin"))]
SLACK_BODY_LIMIT = 64 * 1024


def _state(request: Request) -> Any:
    return request.app.state.conveyor


def _actor(identity: Identity) -> str:
    return identity.user or f"token:{identity.name}"


def _wake(request: Request) -> None:
    _state(request).notify("delivery")


# What the routes that start or stop a deployment answer: the deployment, as shown on its own.
_ANSWERS_DEPLOYMENT: dict[str, Any] = {
    "tags": ["delivery"],
    "response_model": schemas.DeploymentDetail,
    "responses": errors(404, 409),
}
# What the routes that hold or release an environment answer: the environment.
_ANSWERS_ENVIRONMENT: dict[str, Any] = {
    "tags": ["delivery"],
    "response_model": schemas.EnvironmentOut,
    "responses": errors(404, 409),
}


def _deployment_changed(request: Request, store: Any, deployment_id: int) -> dict[str, Any]:
    """After a deployment was started or cancelled: the delivery loop is woken to act on it
    now, and the answer is the deployment."""
    _wake(request)
    return dq.deployment_detail(store, deployment_id)


def _environment(store: Any, service: str, environment: str) -> dict[str, Any]:
    """The environment as the environments list shows it."""
    rows = dq.environments(store, service)
    return rows[[row["environment"] for row in rows].index(environment)]


@router.get(
    "/environments",
    tags=["delivery"],
    response_model=list[schemas.EnvironmentOut],
    responses=errors(404),
)
def list_environments(
    request: Request, _: Reader, service: str | None = None
) -> list[dict[str, Any]]:
    return dq.environments(_state(request).store, service)


@router.get("/deployments", tags=["delivery"], response_model=list[schemas.DeploymentSummary])
def list_deployments(
    request: Request,
    _: Reader,
    narrow: Annotated[RunFilter, Depends(run_filter)],
    service: Annotated[str | None, Query(max_length=200)] = None,
    environment: Annotated[str | None, Query(max_length=200)] = None,
    release: Annotated[int | None, Query(ge=1)] = None,
    status: DeploymentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """The newest deployments first. Page with `before` (the last id of the page before), back
    with `after` (the first id of the page after); `branch`, `author` and `q` are the
    release's commit's, `since` the deployment's own time."""
    return dq.list_deployments(
        _state(request).store,
        service=service,
        environment=environment,
        release=release,
        status=status,
        limit=limit,
        narrow=narrow,
    )


@router.get(
    "/deployments/{deployment_id}",
    tags=["delivery"],
    response_model=schemas.DeploymentDetail,
    responses=errors(404),
)
def show_deployment(request: Request, deployment_id: int, _: Reader) -> dict[str, Any]:
    return dq.deployment_detail(_state(request).store, deployment_id)


@router.post("/deployments/{deployment_id}/cancel", **_ANSWERS_DEPLOYMENT)
def cancel_deployment(request: Request, deployment_id: int, identity: Trigger) -> dict[str, Any]:
    store = _state(request).store
    scoping.check(identity, *scoping.of_deployment(store, deployment_id), "cancel")
    promotion.cancel_deployment(store, deployment_id, _actor(identity))
    return _deployment_changed(request, store, deployment_id)


class PromoteIn(BaseModel):
    environment: str = Field(min_length=1, max_length=200)


@router.post("/releases/{release_id}/promote", status_code=201, **_ANSWERS_DEPLOYMENT)
def promote(
    request: Request, release_id: int, body: PromoteIn, identity: Trigger
) -> dict[str, Any]:
    store = _state(request).store
    service = scoping.of_release(store, release_id)
    scoping.check(identity, service, body.environment, "promote")
    dep = promotion.promote(store, release_id, body.environment, _actor(identity))
    return _deployment_changed(request, store, dep)


class RollbackIn(BaseModel):
    to: int | None = Field(None, ge=1)


@router.post(
    "/services/{service}/environments/{environment}/rollback",
    status_code=201,
    **_ANSWERS_DEPLOYMENT,
)
def rollback(
    request: Request, service: str, environment: str, body: RollbackIn, identity: Trigger
) -> dict[str, Any]:
    scoping.check(identity, service, environment, "roll back")
    store = _state(request).store
    dep = promotion.rollback(store, service, environment, _actor(identity), body.to)
    return _deployment_changed(request, store, dep)


class HoldIn(BaseModel):
    reason: str | None = Field(None, max_length=2000)


@router.post("/services/{service}/environments/{environment}/hold", **_ANSWERS_ENVIRONMENT)
def hold(
    request: Request, service: str, environment: str, body: HoldIn, identity: Trigger
) -> dict[str, Any]:
    scoping.check(identity, service, environment, "hold")
    store = _state(request).store
    promotion.hold(store, service, environment, _actor(identity), body.reason)
    return _environment(store, service, environment)


@router.post("/services/{service}/environments/{environment}/unhold", **_ANSWERS_ENVIRONMENT)
def unhold(request: Request, service: str, environment: str, identity: Trigger) -> dict[str, Any]:
    scoping.check(identity, service, environment, "unhold")
    store = _state(request).store
    promotion.unhold(store, service, environment, _actor(identity))
    _wake(request)
    return _environment(store, service, environment)


@router.get("/approvals", tags=["approvals"], response_model=list[schemas.ApprovalListed])
def list_approvals(request: Request, identity: Reader, all: bool = False) -> list[dict[str, Any]]:
    """Approvals (pending only unless ``all``), each with the change behind it, its rule in
    words, and ``you``: whether the caller may decide it now and, if not, why."""
    store = _state(request).store
    found = dq.list_approvals(store, pending_only=not all)
    known = approvals.people(store)
    can_approve = identity.allows("approve")
    change = ChangeReader(store)
    with store.session() as session:
        for row in found:
            approval = session.get(Approval, row["id"])
            assert approval is not None
            commit = approval.deployment.release.run.commit
            row["commit"] = {
                "sha": approval.deployment.release.sha,
                "subject": commit.get("subject"),
                "author": commit.get("author_name"),
                "author_email": commit.get("author_email"),
            }
            row["decided_at"] = approval.decided_at
            row["rule"] = _rule(approval.required, approval.approvers, known)
            verdict = approvals.verdict(approval, identity.user, can_approve, known, change)
            dep = approval.deployment
            if verdict.may_decide and not identity.may_act_on(dep.service.name, dep.environment):
                verdict = approvals.Verdict(
                    False,
                    f"you may decide for {identity.limits()} only, not {dep.service.name} "
                    f"{dep.environment}",
                )
            row["you"] = {"may_decide": verdict.may_decide, "reason": verdict.reason}
    return found


def _rule(required: int, approvers: list[Any], known: dict[str, Any]) -> str:
    """The rule in words, like "2 of group ops, carol": an approver entry names a user or a
    group, and the page cannot tell which."""
    groups = {g for p in known.values() for g in p.groups}
    names = []
    for a in approvers:
        if a == "*":
            names.append("anyone")
        elif a in known:
            names.append(str(a))
        elif a in groups:
            names.append(f"group {a}")
        else:
            names.append(f"{a} (no such user or group)")
    return f"{required} of {', '.join(names) or 'nobody'}"


class DecisionIn(BaseModel):
    reason: str | None = Field(None, max_length=2000)


def _decide(
    request: Request, approval_id: int, identity: Identity, decision: str, reason: str | None
) -> dict[str, Any]:
    if identity.user is None:
        raise HTTPException(
            403, "this token belongs to no user; approvals need a person's token (--user)"
        )
    store = _state(request).store
    scoping.check(identity, *scoping.of_approval(store, approval_id), decision)
    try:
        approvals.decide(
            store,
            approval_id,
            identity.user,
            decision,
            reason,
            via="api",
            change=ChangeReader(store),
        )
    except approvals.NotAllowed as exc:
        raise HTTPException(403, exc.message) from None
    except NotFound:
        raise
    except ConveyorError as exc:
        # Already decided (by them, or closed): a conflict with the approval's state, not bad
        # input. Asked again read-only, so that a missing reason stays a 400.
        if decision == "reject" and not (reason or "").strip():
            raise
        with store.session() as session:
            approval = session.get(Approval, approval_id)
            conflict = approval is not None and (
                approvals.verdict(
                    approval, identity.user, True, approvals.people(store), ChangeReader(store)
                ).conflict
            )
        if conflict:
            raise HTTPException(409, exc.message) from None
        raise
    _wake(request)
    return next(a for a in dq.list_approvals(store, pending_only=False) if a["id"] == approval_id)


def _decision_route(decision: str) -> None:
    """``POST /approvals/{id}/<decision>``: approve and reject are the same route but for the
    decision (and the route's name, which is the decision)."""

    def endpoint(
        request: Request, approval_id: int, body: DecisionIn, identity: Approver
    ) -> dict[str, Any]:
        return _decide(request, approval_id, identity, decision, body.reason)

    router.add_api_route(
        f"/approvals/{{approval_id}}/{decision}",
        endpoint,
        methods=["POST"],
        name=decision,
        tags=["approvals"],
        response_model=schemas.ApprovalOut,
        responses=errors(404, 409),
    )


for _decision in ("approve", "reject"):
    _decision_route(_decision)


@router.post(
    "/slack/actions",
    tags=["approvals"],
    response_model=schemas.SlackAnswer,
    responses=errors(404, 413),
)
async def slack_action(request: Request) -> dict[str, Any]:
    """Slack's interactivity request URL: the Approve / Reject buttons of an approval message.
    Authenticated by Slack's request signature (v0), not by a token."""
    from conveyor.notify.slack import (
        SlackPayloadError,
        SlackSignatureError,
        parse_action,
        verify_slack_signature,
    )

    secret = _state(request).settings.slack_signing_secret
    if not secret:
        raise HTTPException(404, "Slack actions are not configured on this server")
    body = await request.body()
    if len(body) > SLACK_BODY_LIMIT:
        raise HTTPException(413, "request body too large")
    try:
        verify_slack_signature(
            signing_secret=secret,
            timestamp=request.headers.get("X-Slack-Request-Timestamp"),
            signature=request.headers.get("X-Slack-Signature"),
            body=body,
        )
    except SlackSignatureError as exc:
        raise HTTPException(401, exc.message) from None
    try:
        action = parse_action(body)
    except SlackPayloadError as exc:
        raise HTTPException(400, exc.message) from None
    store = _state(request).store
    try:
        who = approvals.by_slack_id(store, action.slack_user_id)
        service, environment = scoping.of_approval(store, action.approval_id)
        limits = scoping.of_user(store, who.name)
        if service is not None and not limits.may_act_on(service, environment):
            raise approvals.NotAllowed(
                f"{who.name} may decide for {limits.limits()} only, not {service} {environment}"
            )
        status = approvals.decide(
            store,
            action.approval_id,
            who.name,
            action.decision,
            f"from Slack by {action.slack_user_name}" if action.decision == "reject" else None,
            via="slack",
            who=who,
            change=ChangeReader(store),
        )
    except ConveyorError as exc:
        # Slack shows this text to the person who pressed the button.
        return {"response_type": "ephemeral", "replace_original": False, "text": exc.message}
    _wake(request)
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f"Recorded: {action.decision} by {who.name} (approval {status.value})",
    }


@router.get("/incidents", tags=["incidents"], response_model=list[IncidentListed])
def list_incidents(
    request: Request,
    _: Reader,
    service: str | None = None,
    environment: str | None = None,
    status: Annotated[str | None, Query(pattern="^(open|resolved|all)$")] = None,
    open: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Incidents, the latest opened first: ``status`` open, resolved or all (``open=true`` is
    status=open), each with its attribution (``attribution.how``: explicit, window or none),
    deployment, release and version, and ``recovery_seconds``."""
    return dq.list_incidents(
        _state(request).store,
        service=service,
        environment=environment,
        status=None if status == "all" else status,
        open_only=open,
        limit=limit,
    )


@router.get("/audit", tags=["audit"], response_model=list[schemas.AuditEntry])
def audit(
    request: Request,
    _: Reader,
    service: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[dict[str, Any]]:
    return dq.audit_log(_state(request).store, service=service, limit=limit)


class UserIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]+$", max_length=200)
    emails: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    slack_id: str | None = Field(None, max_length=50)


@router.get("/users", tags=["users"], response_model=list[schemas.UserOut])
def list_users(request: Request, _: Admin) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "emails": list(p.emails), "groups": list(p.groups), "slack_id": p.slack_id}
        for p in approvals.people(_state(request).store).values()
    ]


@router.post("/users", status_code=201, tags=["users"], response_model=schemas.UserOut)
def save_user(request: Request, body: UserIn, identity: Admin) -> dict[str, Any]:
    scoping.unlimited(identity, "managing people")
    approvals.add_user(
        _state(request).store, body.name, body.emails, body.groups, body.slack_id, _actor(identity)
    )
    return body.model_dump()
