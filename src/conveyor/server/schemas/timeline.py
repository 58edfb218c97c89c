"""GET /releases/{id}/timeline: the release record, oldest entry first (views/timeline.py).

An entry's ``kind`` says which of the shapes below it has."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field

from conveyor.server.schemas.common import Number, Schema
from conveyor.server.schemas.delivery import ApprovalDecision
from conveyor.server.schemas.incidents import Attribution

__all__ = ["Timeline", "TimelineEntry", "TimelineRelease"]

AT = Field(description="When it began: the entries' order.")
SECONDS = Field(description="Seconds from start to finish; null until both are known.")


class ForgeLinks(Schema):
    forge: str = Field(description="github, gitlab or gitea.")
    commit: str
    compare: str | None = Field(None, description="The diff from the previous release.")


class CommitEntry(Schema):
    kind: Literal["commit"]
    at: dt.datetime = AT
    sha: str
    ref: str | None
    subject: str | None
    message: str | None
    author: str | None
    author_email: str | None
    authored_at: dt.datetime | None
    committer: str | None
    committer_email: str | None
    committed_at: dt.datetime | None
    pusher: str | None
    pusher_via: str | None
    parents: list[Any]
    previous_release_sha: str | None
    links: ForgeLinks | None = Field(description="On the forge; null when it is not known.")


class TimelineJob(Schema):
    name: str
    status: str
    reason: str | None
    needs: list[Any]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = SECONDS


class RunEntry(Schema):
    kind: Literal["run"]
    at: dt.datetime = AT
    run: int
    status: str
    reason: str | None
    trigger: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = SECONDS
    jobs: list[TimelineJob]


class TimelineArtifact(Schema):
    job: str | None
    path: str
    digest: str
    size: int


class Publication(Schema):
    status: str = Field(description='"none" when the release publishes nothing.')
    reference: str | None
    digest: str | None
    images: list[Any]
    error: str | None


class ReleaseEntry(Schema):
    kind: Literal["release"]
    at: dt.datetime = AT
    release: int
    version: str
    artifacts: list[TimelineArtifact]
    publication: Publication


class TimelineCheck(Schema):
    kind: Any
    outcome: Any
    detail: Any
    duration: Any = Field(description="Seconds.")
    data: Any


class DeploymentEntry(Schema):
    kind: Literal["deployment"]
    at: dt.datetime = AT
    service: str
    environment: str
    tier: str
    release: int
    version: str
    sha: str
    status: str
    reason: str | None
    trigger: str
    requested_by: str | None
    previous_release: int | None
    rollback_of: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    healthy_at: dt.datetime | None
    finished_at: dt.datetime | None
    url: str | None
    deployment: int
    failed_at: dt.datetime | None
    duration: float | None = SECONDS
    checks: list[TimelineCheck]


class Undid(Schema):
    deployment: int
    release: int
    version: str
    status: str


class RollbackEntry(DeploymentEntry):
    kind: Literal["rollback"]  # type: ignore[assignment]
    why: str
    automatic: bool = Field(description="Started by a failure, not by a person.")
    undid: Undid | None


class ApprovalEntry(Schema):
    kind: Literal["approval"]
    at: dt.datetime = AT
    approval: int
    approval_kind: str
    status: str
    deployment: int
    environment: str
    approvers: list[Any]
    required: int
    approved: int
    requested_at: dt.datetime
    deadline: dt.datetime | None
    decided_at: dt.datetime | None
    reason: str | None
    decisions: list[ApprovalDecision]


class IncidentEntry(Schema):
    kind: Literal["incident"]
    at: dt.datetime = AT
    incident: int
    id: int
    service: str
    environment: str | None
    status: str
    title: str
    source: str
    deployment: int | None
    release: int | None
    version: str | None
    fingerprint: str | None
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str | None
    attribution: Attribution
    restored_at: dt.datetime | None
    restored_by: str | None
    recovery_seconds: Number | None
    alert: dict[str, Any] | None


TimelineEntry = Annotated[
    CommitEntry
    | RunEntry
    | ReleaseEntry
    | DeploymentEntry
    | RollbackEntry
    | ApprovalEntry
    | IncidentEntry,
    Field(discriminator="kind"),
]


class TimelineRelease(Schema):
    id: int
    service: str
    version: str
    sha: str
    ref: str | None
    run: int
    subject: str | None
    author: str | None
    created_at: dt.datetime
    environments: list[str] = Field(description="Where it serves now.")


class Timeline(Schema):
    release: TimelineRelease
    entries: list[TimelineEntry]
