"""Run, job and step states, and the only transitions allowed between them.

Every status change in Conveyor goes through :func:`check_transition`; the rules are small named
tables so that a test can walk every pair of states and so that a reader can see the whole
machine at a glance.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

StatusT = TypeVar("StatusT", bound=enum.Enum)


class IllegalTransition(Exception):
    """A status change the state machine does not allow (a bug, or a stale writer)."""

    def __init__(self, kind: str, current: enum.Enum, target: enum.Enum) -> None:
        super().__init__(f"{kind} cannot go from {current.value} to {target.value}")
        self.current = current
        self.target = target


class Status(enum.StrEnum):
    """A kind of status with a table of moves (`TABLES`): terminal is what no move leaves,
    the one rule for runs, jobs, steps, deployments, approvals and incidents alike."""

    @property
    def terminal(self) -> bool:
        return self not in TABLES[type(self)]


class RunStatus(Status):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The process driving the run died (kill -9, power loss); found and closed at the next start.
    INTERRUPTED = "interrupted"


class JobStatus(Status):
    PENDING = "pending"  # waiting for the jobs it needs
    QUEUED = "queued"  # ready, waiting for a runner
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # its `if:` did not hold
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class StepStatus(Status):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


# Each rule names why the move exists; the tables below are the whole machine.
RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    # start: the first job is handed to a runner; cancel/interrupt: before anything ran;
    # reject: the commit's pipeline file could not be planned, so nothing can run.
    RunStatus.QUEUED: frozenset(
        {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED}
    ),
    # finish: every job is terminal; cancel: a person asked; interrupt: the driver died.
    RunStatus.RUNNING: frozenset(
        {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}
    ),
}

JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    # ready: its needs are done and its `if:` holds; skip: its `if:` does not hold.
    JobStatus.PENDING: frozenset(
        {JobStatus.QUEUED, JobStatus.SKIPPED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
    ),
    # lease: a runner took it.
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.INTERRUPTED}),
    # requeue: the runner's lease expired and the job may be tried again.
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.INTERRUPTED,
            JobStatus.QUEUED,
        }
    ),
}

STEP_TRANSITIONS: Mapping[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset(
        {StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELLED, StepStatus.INTERRUPTED}
    ),
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CANCELLED,
            StepStatus.INTERRUPTED,
        }
    ),
}


def _terminal(
    kind: type[StatusT], table: Mapping[StatusT, frozenset[StatusT]]
) -> frozenset[StatusT]:
    """The statuses no move leaves."""
    return frozenset(status for status in kind if status not in table)


RUN_TERMINAL = _terminal(RunStatus, RUN_TRANSITIONS)
JOB_TERMINAL = _terminal(JobStatus, JOB_TRANSITIONS)
STEP_TERMINAL = _terminal(StepStatus, STEP_TRANSITIONS)

# Every kind of status and its table; other machines (deployments, approvals, incidents)
# register theirs with `register`, so one `allowed` and one `check_transition` serve them all.
TABLES: dict[type[enum.Enum], Mapping[Any, frozenset[Any]]] = {
    RunStatus: RUN_TRANSITIONS,
    JobStatus: JOB_TRANSITIONS,
    StepStatus: STEP_TRANSITIONS,
}


def register(kind: type[StatusT], table: Mapping[StatusT, frozenset[StatusT]]) -> None:
    TABLES[kind] = table


def allowed(current: enum.Enum, target: enum.Enum) -> bool:
    """Whether ``current -> target`` is a legal move for that kind of status."""
    table = TABLES.get(type(current))
    if table is None or type(target) is not type(current):
        return False
    return target in table.get(current, frozenset())


def check_transition(kind: str, current: enum.Enum, target: enum.Enum) -> None:
    if not allowed(current, target):
        raise IllegalTransition(kind, current, target)
