"""Environments, deployments, releases with their deployments, approvals, users and the audit
log (server/delivery.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from conveyor.server.schemas.common import Schema
from conveyor.server.schemas.runs import Artifact, ReleaseSummary

__all__ = [
    "ApprovalCommit",
    "ApprovalDecision",
    "ApprovalListed",
    "ApprovalOut",
    "AuditEntry",
    "DeployTarget",
    "DeploymentDetail",
    "DeploymentSummary",
    "EnvironmentOut",
    "QueuedDeployment",
    "ReleaseDetail",
    "SlackAnswer",
    "StatusChange",
    "UserOut",
    "YourTurn",
]

VERSION = Field(description="The release's name: r<id>-<short sha>.")


class DeploymentSummary(Schema):
    id: int
    service: str
    environment: str
    tier: str = Field(description="The environment's tier (e.g. production), as DORA counts it.")
    release: int
    version: str = VERSION
    sha: str
    subject: str | None = Field(None, description="The release's commit's subject.")
    author: str | None = Field(None, description="The release's commit's author.")
    kind: str = Field(description="deploy or rollback.")
    status: str = Field(
        description="queued, awaiting_approval, held, deploying, checking, verifying, "
        "rolling_back, succeeded, failed, cancelled, rejected or superseded."
    )
    reason: str | None
    trigger: str = Field(description="What asked for it (promotion, auto, rollback, failure...).")
    requested_by: str | None
    previous_release: int | None = Field(description="What served before it.")
    rollback_of: int | None = Field(description="The deployment a rollback undoes.")
    created_at: dt.datetime
    started_at: dt.datetime | None
    healthy_at: dt.datetime | None
    finished_at: dt.datetime | None
    url: str | None = Field(description="Where the deployed instance answers.")


class ApprovalDecision(Schema):
    user: str
    decision: str = Field(description="approve or reject.")
    reason: str | None
    via: str = Field(description="Where it was decided: api, cli, slack.")
    at: dt.datetime


class ApprovalOut(Schema):
    id: int
    kind: str = Field(description="approval (the environment's gate) or inconclusive.")
    status: str = Field(description="pending, approved, rejected, expired or withdrawn.")
    deployment: int
    service: str
    environment: str
    release: int
    version: str = VERSION
    approvers: list[Any] = Field(description='Users or groups who may decide ("*": anyone).')
    required: int = Field(description="How many approvals it needs.")
    approved: int = Field(description="How many it has.")
    self_approval: bool = Field(description="Whether the change's author may approve it.")
    requested_at: dt.datetime
    deadline: dt.datetime | None
    on_timeout: str = Field(description="What the deadline does: reject or approve.")
    reason: str | None
    decisions: list[ApprovalDecision]


class ApprovalCommit(Schema):
    sha: str
    subject: str | None
    author: str | None
    author_email: str | None


class YourTurn(Schema):
    may_decide: bool = Field(description="Whether the caller may decide it now.")
    reason: str | None = Field(description="If not, why.")


class ApprovalListed(ApprovalOut):
    commit: ApprovalCommit
    decided_at: dt.datetime | None
    rule: str = Field(description='The rule in words, like "2 of group ops, carol".')
    you: YourTurn


class DeployTarget(Schema):
    kind: str = Field(description="The deploy target: process, container, ssh, command...")
    strategy: str = Field(description="recreate, blue-green or rolling.")


class StatusChange(Schema):
    status: str = Field(description="The status entered (queued, deploying, checking...).")
    at: dt.datetime
    reason: str | None
    actor: Any = Field(None, description="Who asked for it, when a person or token did.")


class DeploymentDetail(DeploymentSummary):
    checks: list[Any] = Field(description="The checks' results, in the order they ran.")
    log: list[Any] = Field(description="What the target and the checks reported, in order.")
    output: list[str] = Field(
        default_factory=list,
        description="The last lines the deployed app itself wrote (stdout and stderr), when its "
        "target keeps them on the server's machine (the process target); else empty.",
    )
    approvals: list[ApprovalOut]
    failed_at: dt.datetime | None = Field(None, description="When its failure was detected.")
    target: DeployTarget | None = Field(
        None, description="How it deploys; null when the release's file has no such environment."
    )
    history: list[StatusChange] = Field(
        default_factory=list, description="Each status it went through, oldest first."
    )
    incidents: list[int] = Field(
        default_factory=list, description="The incidents attributed to it."
    )


class QueuedDeployment(Schema):
    deployment: int
    release: int
    kind: str
    status: str
    reason: str | None


class EnvironmentOut(Schema):
    service: str
    environment: str
    tier: str | None
    release: int | None = Field(description="The release serving there.")
    version: str | None
    sha: str | None
    since: dt.datetime | None = Field(description="Since when that release serves.")
    healthy: bool | None = Field(description="The monitor's last verdict; null: not known.")
    checked_at: dt.datetime | None = Field(description="When the monitor last looked.")
    health_detail: str | None = Field(description="What the monitor saw.")
    url: str | None
    verified_release: int | None
    held: bool = Field(description="Held environments take no deployment until unheld.")
    held_by: str | None
    hold_reason: str | None
    queue: list[QueuedDeployment] = Field(description="Deployments waiting or under way.")


class ReleaseDetail(ReleaseSummary):
    commit: dict[str, Any]
    evidence: dict[str, Any] = Field(description="What the release was built and tested with.")
    publication: dict[str, Any] = Field(description="Its images' publication (registry).")
    artifacts: list[Artifact]
    deployments: list[DeploymentSummary] = Field(description="Oldest first.")


class SlackAnswer(Schema):
    """Slack shows ``text`` to the person who pressed the button."""

    response_type: str
    replace_original: bool
    text: str


class UserOut(Schema):
    name: str
    emails: list[str]
    groups: list[str]
    slack_id: str | None


class AuditEntry(Schema):
    id: int
    at: dt.datetime
    type: str = Field(description="The event's type (deployment.queued, approval.decision...).")
    service: str | None
    actor: Any = Field(description="Who did it (a user, token:<name>, or the policy).")
    data: dict[str, Any]
