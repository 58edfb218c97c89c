"""The runner protocol's answers (server/runners.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from conveyor.server.schemas.common import Number, Schema

__all__ = ["Heartbeat", "Lease", "ReportsApplied", "SecretsError"]


class SecretsError(Schema):
    message: str
    hint: str | None


class Lease(Schema):
    """A job leased to a runner, with what it needs to run it."""

    job_id: int
    run_id: int
    job: str = Field(description="The job's name.")
    token: int = Field(description="The lease's fencing token: reports and heartbeats carry it.")
    plan: dict[str, Any] = Field(description="The job's plan (steps, image, variables...).")
    context: dict[str, Any] = Field(description="The run's facts (CONVEYOR_* variables).")
    expires_at: str = Field(description="When the lease ends unless a heartbeat extends it.")
    lease_seconds: Number = Field(description="How long a heartbeat extends the lease.")
    secrets: dict[str, str] = Field(description="The secrets the job references, by name.")
    secrets_error: SecretsError | None = Field(
        None, description="Why the job's secrets could not be read (then `secrets` is empty)."
    )


class ReportsApplied(Schema):
    applied: int = Field(description="Reports applied now (a retried one is not applied again).")
    seq: int = Field(description="The last report applied, now or before.")
    cancel: bool = Field(description="The run was asked to cancel: stop the job.")


class Heartbeat(Schema):
    cancel: bool = Field(description="The run was asked to cancel: stop the job.")
