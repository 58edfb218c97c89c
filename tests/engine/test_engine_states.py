"""Every pair of states is tried against the rules: allowed moves pass, all others raise."""

from __future__ import annotations

import itertools
from enum import Enum

import pytest

from conveyor.deploy_states import (
    DEPLOYMENT_TERMINAL,
    ApprovalStatus,
    DeploymentStatus,
    IncidentStatus,
)
from conveyor.states import (
    JOB_TERMINAL,
    RUN_TERMINAL,
    STEP_TERMINAL,
    IllegalTransition,
    JobStatus,
    RunStatus,
    StepStatus,
    allowed,
    check_transition,
)

EXPECTED: dict[type[Enum], set[tuple[str, str]]] = {
    RunStatus: {
        ("queued", "running"),
        ("queued", "cancelled"),
        ("queued", "interrupted"),
        ("queued", "failed"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "interrupted"),
    },
    JobStatus: {
        ("pending", "queued"),
        ("pending", "skipped"),
        ("pending", "cancelled"),
        ("pending", "interrupted"),
        ("queued", "running"),
        ("queued", "cancelled"),
        ("queued", "interrupted"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "interrupted"),
        ("running", "queued"),
    },
    StepStatus: {
        ("pending", "running"),
        ("pending", "skipped"),
        ("pending", "cancelled"),
        ("pending", "interrupted"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "interrupted"),
    },
    DeploymentStatus: {
        ("queued", "awaiting_approval"),
        ("queued", "deploying"),
        ("queued", "superseded"),
        ("queued", "cancelled"),
        ("awaiting_approval", "deploying"),
        ("awaiting_approval", "rejected"),
        ("awaiting_approval", "superseded"),
        ("awaiting_approval", "cancelled"),
        ("deploying", "checking"),
        ("deploying", "failed"),
        ("deploying", "rolling_back"),
        ("checking", "verifying"),
        ("checking", "succeeded"),
        ("checking", "failed"),
        ("checking", "rolling_back"),
        ("checking", "held"),
        ("checking", "deploying"),
        ("verifying", "deploying"),
        ("held", "deploying"),
        ("verifying", "succeeded"),
        ("verifying", "failed"),
        ("verifying", "rolling_back"),
        ("held", "succeeded"),
        ("held", "failed"),
        ("held", "rolling_back"),
        ("rolling_back", "rolled_back"),
        ("rolling_back", "failed"),
    },
    ApprovalStatus: {
        ("pending", "approved"),
        ("pending", "rejected"),
        ("pending", "expired"),
        ("pending", "withdrawn"),
    },
    IncidentStatus: {("open", "resolved")},
}
KINDS = [RunStatus, JobStatus, StepStatus, DeploymentStatus, ApprovalStatus, IncidentStatus]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_every_pair_of_states(kind: type[Enum]) -> None:
    for current, target in itertools.product(list(kind), repeat=2):
        pair = (current.value, target.value)
        if pair in EXPECTED[kind]:
            assert allowed(current, target), pair
            check_transition("x", current, target)
        else:
            assert not allowed(current, target), pair
            with pytest.raises(IllegalTransition, match=f"from {current.value} to {target.value}"):
                check_transition("x", current, target)


@pytest.mark.parametrize(
    ("kind", "terminal"),
    [
        (RunStatus, RUN_TERMINAL),
        (JobStatus, JOB_TERMINAL),
        (StepStatus, STEP_TERMINAL),
        (DeploymentStatus, DEPLOYMENT_TERMINAL),
        (ApprovalStatus, frozenset(ApprovalStatus) - {ApprovalStatus.PENDING}),
        (IncidentStatus, frozenset({IncidentStatus.RESOLVED})),
    ],
)
def test_terminal_states_have_no_way_out(kind: type[Enum], terminal: frozenset[Enum]) -> None:
    for state in kind:
        leaves = any(allowed(state, t) for t in kind)
        assert leaves == (state not in terminal), state
        assert state.terminal == (state in terminal)  # type: ignore[attr-defined]


def test_statuses_of_different_kinds_never_mix() -> None:
    assert not allowed(RunStatus.QUEUED, JobStatus.RUNNING)
    assert not allowed(DeploymentStatus.QUEUED, RunStatus.RUNNING)
