"""The promotion decision without a store: each named rule on its own, then decide() over them.

engine.promotion loads a Snapshot and applies the actions; the end-to-end behaviour (holds,
supersede, approvals, publication, rollbacks first) is in tests/delivery/test_delivery_gates.py.
"""

from __future__ import annotations

import pytest

from conveyor.deploy_states import DeploymentKind, DeploymentStatus
from conveyor.engine.promotion_rules import (
    CANDIDATE_GATES,
    QUEUE_RULES,
    Active,
    Cancel,
    Candidate,
    Queue,
    RequestApproval,
    Ruling,
    Snapshot,
    Start,
    Supersede,
    Unreadable,
    Wait,
    approval_required,
    decide,
    held,
    promote_first_ready,
    publication_failed,
    publication_pending,
    rollback_first,
    start_approved,
    supersede_awaiting,
    supersede_queued,
    wait_for_active,
)

D = DeploymentStatus
ROLLBACK = DeploymentKind.ROLLBACK


def promo(id: int, release: int | None = None, **fields: object) -> Candidate:
    return Candidate(id, release if release is not None else id, **fields)  # type: ignore[arg-type]


def rollback(id: int, release: int = 1) -> Candidate:
    return Candidate(id, release, ROLLBACK)


def snap(*queued: Candidate, active: Active | None = None, **fields: object) -> Snapshot:
    return Snapshot("staging", tuple(queued), active, **fields)  # type: ignore[arg-type]


def queue_of(s: Snapshot) -> Queue:
    return Queue(s.active, s.promotions, s.rollbacks)


AWAITING = Active(9, D.AWAITING_APPROVAL)


def test_the_rules_have_names_and_run_in_the_documented_order() -> None:
    assert [r.__name__ for r in QUEUE_RULES] == [
        "supersede_queued",
        "supersede_awaiting",
        "start_approved",
        "wait_for_active",
        "rollback_first",
        "promote_first_ready",
    ]
    assert [g.__name__ for g in CANDIDATE_GATES] == [
        "publication_failed",
        "held",
        "publication_pending",
        "approval_required",
    ]


# --- supersede_queued ---------------------------------------------------------------------------


def test_supersede_queued_keeps_only_the_newest_promotion() -> None:
    s = snap(promo(1), rollback(2), promo(3, supersede=True), promo(4, supersede=True))
    ruling = supersede_queued(s, queue_of(s))
    assert ruling is not None
    assert ruling.actions == (Supersede(1, 4), Supersede(3, 4))
    assert ruling.queue == Queue(None, (promo(4, supersede=True),), (rollback(2),))
    assert ruling.actions[0].reason == "superseded by release 4"  # type: ignore[union-attr]


def test_supersede_queued_reads_the_newest_release_file_only() -> None:
    # The older release asked for supersede, the newest does not: nothing is skipped.
    s = snap(promo(1, supersede=True), promo(2))
    assert supersede_queued(s, queue_of(s)) is None


def test_supersede_queued_needs_two_promotions() -> None:
    s = snap(promo(1, supersede=True), rollback(2))
    assert supersede_queued(s, queue_of(s)) is None


# --- supersede_awaiting -------------------------------------------------------------------------


def test_supersede_awaiting_withdraws_the_waiting_promotion() -> None:
    s = snap(promo(10, supersede=True), active=AWAITING)
    ruling = supersede_awaiting(s, queue_of(s))
    assert ruling == Ruling(
        (Supersede(9, 10, withdraw_approvals=True),),
        Queue(None, (promo(10, supersede=True),), ()),
    )


@pytest.mark.parametrize(
    ("active", "queued"),
    [
        (AWAITING, (promo(10),)),  # no supersede in the newest release's file
        (AWAITING, (rollback(10),)),  # nothing newer to promote
        (Active(9, D.AWAITING_APPROVAL, ROLLBACK), (promo(10, supersede=True),)),
        (Active(9, D.DEPLOYING), (promo(10, supersede=True),)),  # already being carried out
        (None, (promo(10, supersede=True),)),
    ],
)
def test_supersede_awaiting_applies_only_to_a_promotion_awaiting_approval(
    active: Active | None, queued: tuple[Candidate, ...]
) -> None:
    s = snap(*queued, active=active)
    assert supersede_awaiting(s, queue_of(s)) is None


# --- start_approved -----------------------------------------------------------------------------


def test_start_approved_starts_the_approved_deployment() -> None:
    s = snap(promo(10), active=Active(9, D.AWAITING_APPROVAL, approved=True))
    assert start_approved(s, queue_of(s)) == Ruling((Start(9),))


def test_start_approved_waits_without_the_approval() -> None:
    s = snap(promo(10), active=AWAITING)
    assert start_approved(s, queue_of(s)) is None
    assert start_approved(snap(promo(10)), queue_of(snap(promo(10)))) is None


# --- wait_for_active ----------------------------------------------------------------------------


def test_wait_for_active_queues_everything_behind_the_active_deployment() -> None:
    s = snap(promo(10), rollback(11), active=Active(9, D.CHECKING))
    assert wait_for_active(s, queue_of(s)) == Ruling(
        (
            Wait(10, "waiting for deployment 9 (checking)"),
            Wait(11, "waiting for deployment 9 (checking)"),
        )
    )


def test_wait_for_active_passes_a_free_environment() -> None:
    s = snap(promo(10))
    assert wait_for_active(s, queue_of(s)) is None


# --- rollback_first -----------------------------------------------------------------------------


def test_rollback_first_starts_the_oldest_rollback() -> None:
    s = snap(promo(1), rollback(2), rollback(3))
    assert rollback_first(s, queue_of(s)) == Ruling((Start(2),))
    assert rollback_first(snap(promo(1)), queue_of(snap(promo(1)))) is None


# --- the candidate gates ------------------------------------------------------------------------


def test_publication_failed_cancels_and_lets_the_next_be_tried() -> None:
    c = promo(1, publication="failed", publication_error="registry said 401")
    assert publication_failed(snap(c), c) == (
        Cancel(1, "release 1 could not be published: registry said 401"),
        False,
    )
    for status in ("none", "pending", "published", None):
        ok = promo(1, publication=status)
        assert publication_failed(snap(ok), ok) is None


def test_held_stops_the_queue_with_who_and_why() -> None:
    c = promo(1)
    s = snap(c, held=True, held_by="ann", hold_reason="audit")
    assert held(s, c) == (Wait(1, "staging is held by ann: audit"), True)
    assert held(snap(c), c) is None


def test_publication_pending_stops_the_queue() -> None:
    c = promo(1, publication="pending")
    assert publication_pending(snap(c), c) == (
        Wait(1, "waiting for the release to be published"),
        True,
    )
    done = promo(1, publication="published")
    assert publication_pending(snap(done), done) is None


def test_approval_required_asks_for_the_approval() -> None:
    config = {"approvers": ["ops"], "required": 1}
    c = promo(1, approval=config)
    assert approval_required(snap(c), c) == (RequestApproval(1, config), True)
    assert approval_required(snap(promo(1)), promo(1)) is None


def test_approval_required_fails_on_an_unreadable_environment_entry() -> None:
    error = ValueError("release 1's conveyor.yml has no environment staging")
    c = promo(1, config_error=error)
    assert approval_required(snap(c), c) == (Unreadable(1, error), True)


def test_promote_first_ready_tries_promotions_in_order() -> None:
    failed = promo(1, publication="failed", publication_error="gone")
    ready = promo(2)
    later = promo(3)
    s = snap(failed, ready, later)
    ruling = promote_first_ready(s, queue_of(s))
    assert ruling == Ruling((Cancel(1, "release 1 could not be published: gone"), Start(2)))


def test_promote_first_ready_stops_at_the_first_gate_that_holds() -> None:
    s = snap(promo(1, publication="pending"), promo(2))
    assert promote_first_ready(s, queue_of(s)) == Ruling(
        (Wait(1, "waiting for the release to be published"),)
    )


def test_a_failed_publication_is_cancelled_even_in_a_held_environment() -> None:
    failed = promo(1, publication="failed", publication_error="gone")
    s = snap(failed, promo(2), held=True, held_by="ann", hold_reason="audit")
    assert promote_first_ready(s, queue_of(s)) == Ruling(
        (
            Cancel(1, "release 1 could not be published: gone"),
            Wait(2, "staging is held by ann: audit"),
        )
    )


# --- decide: the rules together -----------------------------------------------------------------


def test_an_empty_environment_decides_nothing() -> None:
    assert decide(snap()) == []


def test_the_oldest_ready_promotion_starts_fifo() -> None:
    assert decide(snap(promo(1), promo(2))) == [Start(1)]


def test_rollbacks_skip_holds_approvals_and_older_promotions() -> None:
    s = snap(
        promo(1, approval={"approvers": ["ops"]}),
        rollback(2),
        held=True,
        held_by="ann",
        hold_reason="audit",
    )
    assert decide(s) == [Start(2)]


def test_an_active_deployment_makes_the_queue_wait_even_for_rollbacks() -> None:
    s = snap(rollback(2), active=Active(1, D.DEPLOYING))
    assert decide(s) == [Wait(2, "waiting for deployment 1 (deploying)")]


def test_supersede_then_wait_for_the_active_deployment() -> None:
    # As before the rules had names: the superseded one is also told to wait (its
    # `deployment.superseded` event keeps the reason it ended).
    s = snap(promo(2, supersede=True), promo(3, supersede=True), active=Active(1, D.VERIFYING))
    reason = "waiting for deployment 1 (verifying)"
    assert decide(s) == [Supersede(2, 3), Wait(2, reason), Wait(3, reason)]


def test_a_newer_release_supersedes_one_awaiting_approval_and_asks_again() -> None:
    approval = {"approvers": ["ops"]}
    s = snap(promo(10, supersede=True, approval=approval), active=AWAITING)
    assert decide(s) == [
        Supersede(9, 10, withdraw_approvals=True),
        RequestApproval(10, approval),
    ]


def test_a_superseded_approval_still_lets_a_rollback_go_first() -> None:
    s = snap(promo(10, supersede=True), rollback(11), active=AWAITING)
    assert decide(s) == [Supersede(9, 10, withdraw_approvals=True), Start(11)]


def test_an_approved_deployment_starts_before_queued_rollbacks() -> None:
    s = snap(rollback(11), active=Active(9, D.AWAITING_APPROVAL, approved=True))
    assert decide(s) == [Start(9)]


def test_waiting_for_an_approval_keeps_the_queue_waiting() -> None:
    s = snap(promo(10), active=AWAITING)
    assert decide(s) == [Wait(10, "waiting for deployment 9 (awaiting_approval)")]


def test_decide_starts_at_most_one_deployment() -> None:
    s = snap(rollback(1), rollback(2), promo(3), promo(4))
    assert [a for a in decide(s) if isinstance(a, Start)] == [Start(1)]


def test_decide_takes_another_rule_list() -> None:
    # Without rollback_first a rollback is not started by the remaining rules.
    rules = tuple(r for r in QUEUE_RULES if r is not rollback_first)
    assert decide(snap(rollback(1)), rules) == []
