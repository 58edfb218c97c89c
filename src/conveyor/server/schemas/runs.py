"""Services, runs, jobs, logs, artifacts and releases (server/runs.py, server/runners.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from conveyor.server.schemas.common import Schema

__all__ = [
    "Artifact",
    "ArtifactStored",
    "Health",
    "JobDetail",
    "LogLine",
    "LogPage",
    "ReleaseSummary",
    "RunCancelled",
    "RunDetail",
    "RunSummary",
    "ServiceOut",
    "ServiceRemoved",
    "ServiceSaved",
    "StepDetail",
]

Seconds = Field(description="Seconds from start to finish; null until both are known.")


class Health(Schema):
    status: str = Field(description='"ok" whenever the server answers.')
    version: str
    sandbox: str = Field(
        description='How pipeline code is isolated; "off" when the operator chose to run it '
        "unsandboxed."
    )
    limits: str = Field(
        description='What a runaway job can take from the others: "job" (a control group per '
        'command), "process" or "none".'
    )


class ServiceOut(Schema):
    name: str
    repository: str = Field(description="A local path (used in place) or a URL (mirrored).")
    signed_webhooks: bool = Field(description="Whether a webhook secret is set.")
    allow_unsigned: bool
    poll_interval: float | None = Field(description="Seconds between polls; null: no polling.")
    created_at: dt.datetime


class ServiceSaved(ServiceOut):
    webhook_secret: str | None = Field(
        None,
        description="Only in the answer that generated it (generate_webhook_secret): shown once.",
    )


class ServiceRemoved(Schema):
    """What removing a service takes with it (server/runs.py, store/service_removal.py)."""

    service: str
    repository: str
    removed: bool = Field(description="false: a dry run; nothing was removed.")
    runs: int
    releases: int
    deployments: int
    environments: int
    incidents: int
    secrets: int
    in_progress: list[str] = Field(
        description="Runs and deployments still going, which stop a removal (empty once removed)."
    )


class RunSummary(Schema):
    id: int
    service: str
    status: str = Field(
        description="queued, running, succeeded, failed, cancelled, interrupted or superseded."
    )
    reason: str | None = Field(description="Why it ended as it did, when not plainly.")
    sha: str
    ref: str | None = Field(description="e.g. refs/heads/main; null for a bare commit.")
    trigger: str = Field(description="Who or what queued it (api:<token>, hook, rerun:...).")
    subject: str | None = Field(description="The commit's subject line.")
    author: str | None
    concurrency_group: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = Seconds


class StepDetail(Schema):
    position: int = Field(description="Log lines name their step by it (`step`).")
    name: str
    status: str
    exit_code: int | None
    attempts: int
    reason: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = Seconds


class JobDetail(Schema):
    name: str
    position: int
    status: str
    reason: str | None
    needs: list[Any] = Field(description="The names of the jobs it waits for.")
    runner: str | None
    attempt: int = Field(
        description="How many times a runner was given the job (it starts over when its runner "
        "is lost); 0: not run yet."
    )
    log_bytes: int = Field(description="Bytes of log stored for the job (every attempt).")
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None = Seconds
    steps: list[StepDetail]


class Artifact(Schema):
    job: str | None
    path: str
    digest: str = Field(description="sha256:<hex>; GET /artifacts/{digest} downloads it.")
    size: int = Field(description="Bytes.")


class RunDetail(RunSummary):
    commit: dict[str, Any] = Field(
        description="What git says of the commit (subject, message, author_name, author_email, "
        "authored_at, committed_at, parents, pusher...)."
    )
    jobs: list[JobDetail]
    release: int | None = Field(description="The release the run made, if it made one.")
    rerun_of: int | None = Field(description="The run this one ran again.")
    artifacts: list[Artifact]


class RunCancelled(Schema):
    run: int
    was: str = Field(description="The run's status when cancelling was asked.")
    jobs: int = Field(description="How many jobs the run has.")


class LogLine(Schema):
    id: int = Field(description="The cursor: `after` takes it.")
    job: str
    seq: int
    ts: dt.datetime
    text: str
    step: int | None = Field(
        description="The position of the step that wrote the line; null: the job's own setup."
    )
    attempt: int = Field(
        description="The job's attempt that wrote it (1, 2...); 0: a note left where retention "
        "removed the job's log."
    )


class LogPage(Schema):
    lines: list[LogLine]
    ended: bool = Field(description="The run has ended and this page holds its last lines.")
    next: int = Field(description="The cursor for the next page (`after`).")


class ArtifactStored(Schema):
    digest: str
    stored: bool = Field(description="False: the server had these bytes already.")
    size: int | None = Field(None, description="Bytes received; left out when not stored.")


class ReleaseSummary(Schema):
    id: int
    service: str
    run: int = Field(description="The run that built it.")
    sha: str
    ref: str | None
    subject: str | None
    author: str | None
    created_at: dt.datetime
