"""Which deployment of an environment starts now: a pure decision over a snapshot.

``decide(snapshot)`` returns the actions that move one environment's queue on; it reads nothing
and writes nothing. engine.promotion loads the snapshot from the store (one environment, under
its row lock) and applies the actions in order, each with its events, in the same transaction.

The decision is a chain of named rules, as in Prefect's orchestration policies: each looks at
the snapshot and at what the rules before it left of the queue, and either passes, narrows the
queue for the rules after it, or decides. The queue rules run first, in ``QUEUE_RULES`` order:

1. ``supersede_queued``: with ``supersede: true`` (in the newest queued release's file), the
   newest queued promotion skips the older ones, which end ``superseded``.
2. ``supersede_awaiting``: likewise, a promotion still waiting for its approval is superseded
   (its pending approvals withdrawn) by a newer queued one.
3. ``start_approved``: a deployment whose approval was given starts.
4. ``wait_for_active``: one active deployment per environment; everything queued waits for it.
5. ``rollback_first``: a queued rollback starts before any promotion, whatever holds, approvals
   or publication say.
6. ``promote_first_ready``: the queued promotions in FIFO order meet the candidate gates
   (``CANDIDATE_GATES``): ``publication_failed`` cancels a release that could not be published
   (and the next one is tried); ``held``, ``publication_pending`` and ``approval_required`` stop
   the queue (the last one asks for the approval); a promotion that passes them all starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.deploy_states import DeploymentKind, DeploymentStatus

D = DeploymentStatus

# --- the snapshot ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A queued deployment of the environment."""

    id: int
    release_id: int
    kind: DeploymentKind = DeploymentKind.DEPLOY
    # The release's publication status ("none", "pending", "published", "failed"; None for
    # releases recorded before publication existed) and, when it failed, why.
    publication: str | None = "none"
    publication_error: Any = None
    # From the environment's entry in the release's own conveyor.yml (promotions only).
    supersede: bool = False
    approval: Mapping[str, Any] | None = None
    # Why that entry could not be read, if it could not: deciding on it raises this.
    config_error: Exception | None = None


@dataclass(frozen=True)
class Active:
    """The deployment occupying the environment (awaiting approval, or being carried out)."""

    id: int
    status: DeploymentStatus
    kind: DeploymentKind = DeploymentKind.DEPLOY
    approved: bool = False  # awaiting approval, and the approval was given


@dataclass(frozen=True)
class Snapshot:
    """What the decision needs to know of one environment."""

    environment: str
    queued: tuple[Candidate, ...] = ()  # oldest first
    active: Active | None = None
    held: bool = False
    held_by: str | None = None
    hold_reason: str | None = None

    @property
    def promotions(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.queued if c.kind == DeploymentKind.DEPLOY)

    @property
    def rollbacks(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.queued if c.kind == DeploymentKind.ROLLBACK)


# --- the actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Carry this deployment out now."""

    deployment_id: int


@dataclass(frozen=True)
class Supersede:
    deployment_id: int
    by_release: int
    withdraw_approvals: bool = False  # it was awaiting approval: its pending ones are withdrawn

    @property
    def reason(self) -> str:
        return f"superseded by release {self.by_release}"


@dataclass(frozen=True)
class Wait:
    """It stays queued; its reason says why (written only when it changed)."""

    deployment_id: int
    reason: str


@dataclass(frozen=True)
class Cancel:
    deployment_id: int
    reason: str


@dataclass(frozen=True)
class RequestApproval:
    deployment_id: int
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unreadable:
    """The release's conveyor.yml has no usable entry for the environment: deciding fails."""

    deployment_id: int
    error: Exception


Action = Start | Supersede | Wait | Cancel | RequestApproval | Unreadable

# --- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """What is left to decide on, as the rules before narrowed it."""

    active: Active | None
    promotions: tuple[Candidate, ...]
    rollbacks: tuple[Candidate, ...]


@dataclass(frozen=True)
class Ruling:
    """A rule's answer: its actions, and the queue the next rules see (None: decided)."""

    actions: tuple[Action, ...] = ()
    queue: Queue | None = None


QueueRule = Callable[[Snapshot, Queue], Ruling | None]  # None: the rule does not apply


def _supersedes(queue: Queue) -> bool:
    """``supersede: true`` in the newest queued promotion's file."""
    return bool(queue.promotions) and queue.promotions[-1].supersede


def supersede_queued(snap: Snapshot, queue: Queue) -> Ruling | None:
    if not _supersedes(queue) or len(queue.promotions) < 2:
        return None
    newest = queue.promotions[-1]
    older = tuple(Supersede(c.id, newest.release_id) for c in queue.promotions[:-1])
    return Ruling(older, dataclasses.replace(queue, promotions=(newest,)))


def supersede_awaiting(snap: Snapshot, queue: Queue) -> Ruling | None:
    active = queue.active
    if (
        active is None
        or active.status != D.AWAITING_APPROVAL
        or active.kind != DeploymentKind.DEPLOY
        or not _supersedes(queue)
    ):
        return None
    newest = queue.promotions[-1]
    action = Supersede(active.id, newest.release_id, withdraw_approvals=True)
    return Ruling((action,), dataclasses.replace(queue, active=None))


def start_approved(snap: Snapshot, queue: Queue) -> Ruling | None:
    active = queue.active
    if active is None or active.status != D.AWAITING_APPROVAL or not active.approved:
        return None
    return Ruling((Start(active.id),))


def wait_for_active(snap: Snapshot, queue: Queue) -> Ruling | None:
    active = queue.active
    if active is None:
        return None
    # Every deployment queued when the decision began, as before the rules were named: one
    # that supersede_queued just superseded gets this reason too (its event keeps the other).
    reason = f"waiting for deployment {active.id} ({active.status})"
    return Ruling(tuple(Wait(c.id, reason) for c in snap.queued))


def rollback_first(snap: Snapshot, queue: Queue) -> Ruling | None:
    if not queue.rollbacks:
        return None
    return Ruling((Start(queue.rollbacks[0].id),))


# A candidate gate's answer: None lets the promotion through; otherwise an action and whether
# the queue stops there (True) or the next promotion is tried (False).
Gate = Callable[[Snapshot, Candidate], tuple[Action, bool] | None]


def publication_failed(snap: Snapshot, c: Candidate) -> tuple[Action, bool] | None:
    if c.publication != "failed":
        return None
    reason = f"release {c.release_id} could not be published: {c.publication_error}"
    return Cancel(c.id, reason), False


def held(snap: Snapshot, c: Candidate) -> tuple[Action, bool] | None:
    if not snap.held:
        return None
    return Wait(c.id, f"{snap.environment} is held by {snap.held_by}: {snap.hold_reason}"), True


def publication_pending(snap: Snapshot, c: Candidate) -> tuple[Action, bool] | None:
    if c.publication != "pending":
        return None
    return Wait(c.id, "waiting for the release to be published"), True


def approval_required(snap: Snapshot, c: Candidate) -> tuple[Action, bool] | None:
    if c.config_error is not None:
        return Unreadable(c.id, c.config_error), True
    if c.approval is None:
        return None
    return RequestApproval(c.id, c.approval), True


CANDIDATE_GATES: tuple[Gate, ...] = (
    publication_failed,
    held,
    publication_pending,
    approval_required,
)


def promote_first_ready(snap: Snapshot, queue: Queue) -> Ruling | None:
    actions: list[Action] = []
    for candidate in queue.promotions:
        verdict = _gate(snap, candidate)
        if verdict is None:
            return Ruling((*actions, Start(candidate.id)))
        action, stop = verdict
        actions.append(action)
        if stop:
            break
    return Ruling(tuple(actions))


def _gate(snap: Snapshot, candidate: Candidate) -> tuple[Action, bool] | None:
    for gate in CANDIDATE_GATES:
        verdict = gate(snap, candidate)
        if verdict is not None:
            return verdict
    return None


QUEUE_RULES: tuple[QueueRule, ...] = (
    supersede_queued,
    supersede_awaiting,
    start_approved,
    wait_for_active,
    rollback_first,
    promote_first_ready,
)


def decide(snap: Snapshot, rules: tuple[QueueRule, ...] = QUEUE_RULES) -> list[Action]:
    """The actions that move this environment's queue on, in the order to apply them; at
    most one of them is a Start."""
    queue = Queue(snap.active, snap.promotions, snap.rollbacks)
    actions: list[Action] = []
    for rule in rules:
        ruling = rule(snap, queue)
        if ruling is None:
            continue
        actions.extend(ruling.actions)
        if ruling.queue is None:
            break
        queue = ruling.queue
    return actions
