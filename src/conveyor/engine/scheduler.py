"""The decisions of a run, as pure functions of its jobs' states (no I/O, easy to test).

The controller asks what to do next and applies the answer to the store; keeping the two apart
is what lets the same rules drive the built-in runner and, later, a fleet of remote runners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from conveyor.plan import Condition
from conveyor.states import JobStatus, RunStatus


@dataclass(frozen=True)
class JobView:
    status: JobStatus
    needs: tuple[str, ...]
    condition: Condition
    continue_on_error: bool = False

    @property
    def passed(self) -> bool:
        """Succeeded, or failed in a job that may fail without failing what follows."""
        return self.status is JobStatus.SUCCEEDED or (
            self.status is JobStatus.FAILED and self.continue_on_error
        )

    @property
    def broke(self) -> bool:
        return self.status in (JobStatus.FAILED, JobStatus.INTERRUPTED) and not self.passed


@dataclass(frozen=True)
class Decision:
    job: str
    status: JobStatus
    reason: str | None = None


def next_decisions(jobs: Mapping[str, JobView]) -> list[Decision]:
    """Pending jobs whose needs are all finished become queued or skipped, per their `if:`."""
    decisions: list[Decision] = []
    for name, job in jobs.items():
        if job.status is not JobStatus.PENDING:
            continue
        needs = [jobs[n] for n in job.needs]
        if not all(n.status.terminal for n in needs):
            continue
        all_passed = all(n.passed for n in needs)
        failed = [n for n, v in zip(job.needs, needs, strict=True) if v.broke]
        if job.condition == "always":
            decisions.append(Decision(name, JobStatus.QUEUED))
        elif job.condition == "failure":
            if failed:
                decisions.append(Decision(name, JobStatus.QUEUED))
            else:
                decisions.append(Decision(name, JobStatus.SKIPPED, "no job it needs failed"))
        elif all_passed:
            decisions.append(Decision(name, JobStatus.QUEUED))
        else:
            not_passed = [n for n, v in zip(job.needs, needs, strict=True) if not v.passed]
            decisions.append(
                Decision(
                    name, JobStatus.SKIPPED, f"needs {', '.join(not_passed)}, which did not pass"
                )
            )
    return decisions


def cancel_decisions(jobs: Mapping[str, JobView]) -> list[Decision]:
    """On cancel, jobs that have not started are cancelled (running ones are stopped by signal)."""
    return [
        Decision(name, JobStatus.CANCELLED, "the run was cancelled")
        for name, job in jobs.items()
        if job.status in (JobStatus.PENDING, JobStatus.QUEUED)
    ]


def decide(views: dict[str, JobView], cancel: bool = False) -> list[Decision]:
    """Every decision this turn allows, followed through the DAG (a skipped job skips its
    dependants at once); ``views`` is updated to match. With ``cancel``, what has not started
    is cancelled instead."""
    batch = cancel_decisions(views) if cancel else next_decisions(views)
    decided: list[Decision] = []
    while batch:
        decided += batch
        for d in batch:
            views[d.job] = replace(views[d.job], status=d.status)
        batch = [] if cancel else next_decisions(views)
    return decided


def run_outcome(
    jobs: Mapping[str, JobView], cancel_requested: bool
) -> tuple[RunStatus, str | None]:
    """The run's final status once every job is terminal."""
    if not all(j.status.terminal for j in jobs.values()):
        raise ValueError("the run still has unfinished jobs")
    broken = sorted(name for name, job in jobs.items() if job.broke)
    if cancel_requested:
        return RunStatus.CANCELLED, "cancelled by request"
    if broken:
        label = "job" if len(broken) == 1 else "jobs"
        return RunStatus.FAILED, f"{label} {', '.join(broken)} failed"
    if any(j.status is JobStatus.CANCELLED for j in jobs.values()):
        return RunStatus.CANCELLED, "a job was cancelled"
    return RunStatus.SUCCEEDED, None
