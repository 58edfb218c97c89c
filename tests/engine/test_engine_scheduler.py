"""The scheduler's decisions for `needs` and `if:` conditions."""

from __future__ import annotations

from conveyor.engine.scheduler import (
    Decision,
    JobView,
    cancel_decisions,
    next_decisions,
    run_outcome,
)
from conveyor.states import JobStatus, RunStatus

P, Q, R, S, F, K = (
    JobStatus.PENDING,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.SKIPPED,
)


def view(status: JobStatus, *needs: str, condition: str = "success", coe: bool = False) -> JobView:
    return JobView(status, tuple(needs), condition, coe)  # type: ignore[arg-type]


def test_jobs_without_needs_are_queued_at_once() -> None:
    assert next_decisions({"a": view(P), "b": view(P, "a")}) == [Decision("a", Q)]


def test_a_job_waits_until_every_need_is_finished() -> None:
    assert next_decisions({"a": view(S), "b": view(R), "c": view(P, "a", "b")}) == []


def test_failure_skips_dependants_and_says_why() -> None:
    [decision] = next_decisions({"a": view(F), "b": view(S), "c": view(P, "a", "b")})
    assert decision.job == "c"
    assert decision.status is K
    assert decision.reason == "needs a, which did not pass"


def test_if_failure_runs_only_after_a_failure() -> None:
    after_failure = next_decisions({"a": view(F), "notify": view(P, "a", condition="failure")})
    after_success = next_decisions({"a": view(S), "notify": view(P, "a", condition="failure")})
    assert after_failure == [Decision("notify", Q)]
    assert after_success[0].status is K


def test_if_always_runs_whatever_happened() -> None:
    jobs = {"a": view(F), "b": view(K), "cleanup": view(P, "a", "b", condition="always")}
    assert next_decisions(jobs) == [Decision("cleanup", Q)]


def test_continue_on_error_counts_as_passed_for_dependants() -> None:
    jobs = {"flaky": view(F, coe=True), "next": view(P, "flaky")}
    assert next_decisions(jobs) == [Decision("next", Q)]
    assert run_outcome({"flaky": view(F, coe=True), "next": view(S)}, False) == (
        RunStatus.SUCCEEDED,
        None,
    )


def test_cancel_stops_what_has_not_started() -> None:
    jobs = {"a": view(R), "b": view(Q), "c": view(P, "a")}
    assert [d.job for d in cancel_decisions(jobs)] == ["b", "c"]


def test_outcome_names_the_failed_jobs() -> None:
    jobs = {"a": view(F), "b": view(F), "c": view(K, "a")}
    assert run_outcome(jobs, False) == (RunStatus.FAILED, "jobs a, b failed")
    assert run_outcome(jobs, True)[0] is RunStatus.CANCELLED
