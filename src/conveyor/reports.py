"""How a runner reports a job: the protocol between the executor of a job (conveyor.runner) and
whatever records it, the store in this process (conveyor.engine.job_reports) or a server over
HTTP (conveyor.runner.agent). A leaf, so that a runner agent needs nothing of the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from conveyor.states import JobStatus, StepStatus

__all__ = ["ArtifactFile", "JobReporter", "LogBatch", "StepOutcome"]

LogBatch = Sequence[tuple[dt.datetime, str]]


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # posix, relative to the workspace
    digest: str  # "sha256:<hex>"
    size: int


@dataclass(frozen=True)
class StepOutcome:
    """How a step ended: its status, its last attempt's exit code, why it failed, and how many
    attempts it took (0 for a step that never ran)."""

    status: StepStatus
    exit_code: int | None = None
    reason: str | None = None
    attempts: int = 0


class JobReporter(Protocol):
    async def step_started(self, position: int, attempt: int) -> None: ...
    async def log(self, position: int | None, lines: LogBatch) -> None: ...
    async def step_finished(self, position: int, outcome: StepOutcome) -> None: ...
    async def artifacts(self, files: Sequence[ArtifactFile]) -> None: ...
    async def job_finished(self, status: JobStatus, reason: str | None) -> None: ...
    async def heartbeat(self) -> bool:
        """Extend the lease; True when the run was asked to cancel."""
        ...
