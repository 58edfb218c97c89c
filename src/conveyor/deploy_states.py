"""Deployment, approval and incident states, and the only transitions allowed between them.

Same shape as engine.states: small named tables a test walks pair by pair.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from conveyor.states import Status, allowed, check_transition, register


class DeploymentStatus(Status):
    QUEUED = "queued"  # waiting for its turn in the environment (FIFO), a hold, or publishing
    AWAITING_APPROVAL = "awaiting_approval"
    DEPLOYING = "deploying"  # the target is putting it in place
    CHECKING = "checking"  # health checks run against it
    VERIFYING = "verifying"  # verification commands run against it
    HELD = "held"  # checks were inconclusive: a person decides (approve keeps it, reject undoes)
    ROLLING_BACK = "rolling_back"  # it failed; a rollback deployment is putting back the last good
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"  # it failed and the environment was restored
    REJECTED = "rejected"  # approval refused or timed out
    SUPERSEDED = "superseded"  # a newer release took its place in the queue
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Occupies its environment: only one such deployment per environment at a time."""
        return self in DEPLOYMENT_ACTIVE


class DeploymentKind(enum.StrEnum):
    """What a deployment does (stored as text in deployments.kind)."""

    DEPLOY = "deploy"  # a release promoted into the environment (automatically or by hand)
    ROLLBACK = "rollback"  # a release that served there before, put back


class ApprovalStatus(Status):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # the timeout passed; its on_timeout action was applied
    WITHDRAWN = "withdrawn"  # the deployment went away (superseded, cancelled)


class IncidentStatus(Status):
    OPEN = "open"
    RESOLVED = "resolved"


DEPLOYMENT_TERMINAL = frozenset(
    {
        DeploymentStatus.SUCCEEDED,
        DeploymentStatus.FAILED,
        DeploymentStatus.ROLLED_BACK,
        DeploymentStatus.REJECTED,
        DeploymentStatus.SUPERSEDED,
        DeploymentStatus.CANCELLED,
    }
)
DEPLOYMENT_ACTIVE = frozenset(
    {
        DeploymentStatus.AWAITING_APPROVAL,
        DeploymentStatus.DEPLOYING,
        DeploymentStatus.CHECKING,
        DeploymentStatus.VERIFYING,
        DeploymentStatus.HELD,
        DeploymentStatus.ROLLING_BACK,
    }
)
# Not finished yet: queued, waiting or being carried out (every status that is not terminal).
DEPLOYMENT_OPEN = frozenset(DeploymentStatus) - DEPLOYMENT_TERMINAL

_D = DeploymentStatus
DEPLOYMENT_TRANSITIONS: Mapping[DeploymentStatus, frozenset[DeploymentStatus]] = {
    # gate: approval needed; start: its turn came; supersede: a newer release skips it.
    _D.QUEUED: frozenset({_D.AWAITING_APPROVAL, _D.DEPLOYING, _D.SUPERSEDED, _D.CANCELLED}),
    # approve / reject or time out / a newer release skips it.
    _D.AWAITING_APPROVAL: frozenset({_D.DEPLOYING, _D.REJECTED, _D.SUPERSEDED, _D.CANCELLED}),
    # placed: check it; the target failed (nothing switched, or failure policy applies).
    _D.DEPLOYING: frozenset({_D.CHECKING, _D.FAILED, _D.ROLLING_BACK}),
    # healthy: verify (or done when there is nothing to verify); unhealthy; inconclusive.
    # Back to deploying (here and below): the server died mid-way and a restarted one carries
    # the deployment out again (engine.promotion.resume).
    _D.CHECKING: frozenset(
        {_D.VERIFYING, _D.SUCCEEDED, _D.FAILED, _D.ROLLING_BACK, _D.HELD, _D.DEPLOYING}
    ),
    _D.VERIFYING: frozenset({_D.SUCCEEDED, _D.FAILED, _D.ROLLING_BACK, _D.DEPLOYING}),
    # a person accepts it, or rejects it (undone by the failure policy).
    _D.HELD: frozenset({_D.SUCCEEDED, _D.FAILED, _D.ROLLING_BACK, _D.DEPLOYING}),
    # the rollback deployment finished: restored, or it failed too.
    _D.ROLLING_BACK: frozenset({_D.ROLLED_BACK, _D.FAILED}),
}

_A = ApprovalStatus
APPROVAL_TRANSITIONS: Mapping[ApprovalStatus, frozenset[ApprovalStatus]] = {
    _A.PENDING: frozenset({_A.APPROVED, _A.REJECTED, _A.EXPIRED, _A.WITHDRAWN}),
}

INCIDENT_TRANSITIONS: Mapping[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.OPEN: frozenset({IncidentStatus.RESOLVED}),
}


register(DeploymentStatus, DEPLOYMENT_TRANSITIONS)
register(ApprovalStatus, APPROVAL_TRANSITIONS)
register(IncidentStatus, INCIDENT_TRANSITIONS)

__all__ = ["allowed", "check_transition"]
