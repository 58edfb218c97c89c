"""The catalog: every event type Conveyor records, and every notice it sends, spelled once.

A leaf module (it imports nothing from Conveyor), so every layer can name events through it:
the store's writer (``Writer.emit``), the engine, the hub's channels, the SSE stream, the
Prometheus exposition, CDEvents, the outbox and the notifiers.

There are two vocabularies, and both leave the process, so neither is renamed here:

- ``EventType``: the append-only event log (the ``events`` table), read back by the API
  (``/api/v1/events``, ``conveyor audit``), the SSE stream, ``/metrics`` and CDEvents. A
  deployment's or an approval's state change is recorded as ``<kind>.<new status>``
  (``deployment.rolled_back``: the failed deployment ended rolled back), see
  ``deployment_event`` and ``approval_event``.
- ``NoticeEvent``: what a ``conveyor.yml`` lists under ``notify: on:`` and what a notice
  carries to Slack, webhooks, email and the inbox (its ``event`` field). These name outcomes
  people care about, and since the first release they are spelled as documented in
  docs/notifications.md: ``deployment.rolledback`` (the environment is back on an earlier
  release, as CDEvents' ``service.rolledback``), ``deployment.started`` (the log's
  ``deployment.deploying``), ``run.failed``.

``deployment.rolled_back`` and ``deployment.rolledback`` are therefore not two spellings of one
name but one name in each vocabulary; ``NOTICE_OF_EVENT`` says which log event each notice goes
with. No stored row holds a spelling outside this catalog (tests/test_events_catalog.py scans
the sources), so no reader needs a legacy alias today; ``LEGACY_EVENT_TYPES`` is where one goes
(old spelling → current member) if a type is ever renamed: ``event_type`` reads it, and rows
already stored keep their old text (the ``events`` table is append-only).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class EventType(enum.StrEnum):
    """Every type written to the event log."""

    # Changes coming in (sources).
    CHANGE_RECEIVED = "change.received"
    CHANGE_PROCESSED = "change.processed"
    # Runs, jobs (Tekton's names: pipelinerun, taskrun), steps, logs and artifacts.
    PIPELINERUN_QUEUED = "pipelinerun.queued"
    PIPELINERUN_STARTED = "pipelinerun.started"
    PIPELINERUN_CANCEL_REQUESTED = "pipelinerun.cancel_requested"
    PIPELINERUN_FINISHED = "pipelinerun.finished"
    TASKRUN_QUEUED = "taskrun.queued"
    TASKRUN_STARTED = "taskrun.started"
    TASKRUN_REQUEUED = "taskrun.requeued"
    TASKRUN_FINISHED = "taskrun.finished"
    STEP_STARTED = "step.started"
    STEP_FINISHED = "step.finished"
    LOG_APPENDED = "log.appended"
    ARTIFACT_PACKAGED = "artifact.packaged"
    # Releases.
    RELEASE_CREATED = "release.created"
    RELEASE_PUBLISHED = "release.published"
    RELEASE_PUBLISH_FAILED = "release.publish_failed"
    # Deployments: queued and resumed, then one per status it moves to (deployment_event).
    DEPLOYMENT_QUEUED = "deployment.queued"
    DEPLOYMENT_RESUMED = "deployment.resumed"
    DEPLOYMENT_AWAITING_APPROVAL = "deployment.awaiting_approval"
    DEPLOYMENT_DEPLOYING = "deployment.deploying"
    DEPLOYMENT_CHECKING = "deployment.checking"
    DEPLOYMENT_VERIFYING = "deployment.verifying"
    DEPLOYMENT_HELD = "deployment.held"
    DEPLOYMENT_ROLLING_BACK = "deployment.rolling_back"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_REJECTED = "deployment.rejected"
    DEPLOYMENT_SUPERSEDED = "deployment.superseded"
    DEPLOYMENT_CANCELLED = "deployment.cancelled"
    # Approvals: requested, a person's decision (or a refused one), then how it closed.
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECISION = "approval.decision"
    APPROVAL_REFUSED = "approval.refused"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_WITHDRAWN = "approval.withdrawn"
    # Environments.
    ENVIRONMENT_HELD = "environment.held"
    ENVIRONMENT_UNHELD = "environment.unheld"
    ENVIRONMENT_SWITCHED = "environment.switched"
    ENVIRONMENT_RESTARTED = "environment.restarted"
    ENVIRONMENT_HEALTHY = "environment.healthy"
    ENVIRONMENT_UNHEALTHY = "environment.unhealthy"
    # Incidents and alerts.
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_UPDATED = "incident.updated"
    INCIDENT_RESOLVED = "incident.resolved"
    ALERT_IGNORED = "alert.ignored"
    # History and outgoing CDEvents.
    HISTORY_IMPORTED = "history.imported"
    CDEVENTS_DROPPED = "cdevents.dropped"
    # Administration (the audit log).
    SERVICE_REGISTERED = "service.registered"
    SERVICE_REMOVED = "service.removed"
    TOKEN_CREATED = "token.created"  # noqa: S105 (an event name)
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 (an event name)
    SESSION_STARTED = "session.started"
    SESSION_REFUSED = "session.refused"
    SECRET_SET = "secret.set"  # noqa: S105 (an event name)
    SECRET_REMOVED = "secret.removed"  # noqa: S105 (an event name)
    USER_SAVED = "user.saved"
    USER_CREDENTIALS_CHANGED = "user.credentials_changed"
    TEAM_SAVED = "team.saved"
    TEAM_DELETED = "team.deleted"

    @property
    def family(self) -> str:
        """What it is about: ``deployment`` for ``deployment.failed``."""
        return self.value.partition(".")[0]

    @property
    def action(self) -> str:
        """What happened: ``failed`` for ``deployment.failed``."""
        return self.value.partition(".")[2]


class NoticeEvent(enum.StrEnum):
    """The names ``notify: on:`` accepts and notices carry (docs/notifications.md)."""

    APPROVAL_REQUESTED = "approval.requested"
    DEPLOYMENT_STARTED = "deployment.started"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ROLLEDBACK = "deployment.rolledback"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_RESOLVED = "incident.resolved"
    RUN_FAILED = "run.failed"
    RUN_SUCCEEDED = "run.succeeded"


# What ``notify: on:`` holds when a notifier does not say.
DEFAULT_NOTICE_EVENTS: tuple[NoticeEvent, ...] = (
    NoticeEvent.APPROVAL_REQUESTED,
    NoticeEvent.DEPLOYMENT_FAILED,
    NoticeEvent.DEPLOYMENT_ROLLEDBACK,
    NoticeEvent.RUN_FAILED,
)

NOTICE_TITLES: Mapping[str, str] = {  # keyed by NoticeEvent; read with stored text
    NoticeEvent.APPROVAL_REQUESTED: "Approval requested",
    NoticeEvent.DEPLOYMENT_STARTED: "Deployment started",
    NoticeEvent.DEPLOYMENT_SUCCEEDED: "Deployment succeeded",
    NoticeEvent.DEPLOYMENT_FAILED: "Deployment failed",
    NoticeEvent.DEPLOYMENT_ROLLEDBACK: "Rolled back",
    NoticeEvent.INCIDENT_OPENED: "Incident opened",
    NoticeEvent.INCIDENT_RESOLVED: "Incident resolved",
    NoticeEvent.RUN_FAILED: "Run failed",
    NoticeEvent.RUN_SUCCEEDED: "Run succeeded",
}

# The log event written in the same transaction as each notice (the notice announces it).
# deployment.rolledback goes with the *rollback* deployment's success; the failed one's end is
# deployment.rolled_back. run.failed and run.succeeded are accepted in notify.on but no notice
# of them is queued yet.
NOTICE_OF_EVENT: Mapping[NoticeEvent, EventType | None] = {
    NoticeEvent.APPROVAL_REQUESTED: EventType.APPROVAL_REQUESTED,
    NoticeEvent.DEPLOYMENT_STARTED: EventType.DEPLOYMENT_DEPLOYING,
    NoticeEvent.DEPLOYMENT_SUCCEEDED: EventType.DEPLOYMENT_SUCCEEDED,
    NoticeEvent.DEPLOYMENT_FAILED: EventType.DEPLOYMENT_FAILED,
    NoticeEvent.DEPLOYMENT_ROLLEDBACK: EventType.DEPLOYMENT_SUCCEEDED,
    NoticeEvent.INCIDENT_OPENED: EventType.INCIDENT_OPENED,
    NoticeEvent.INCIDENT_RESOLVED: EventType.INCIDENT_RESOLVED,
    NoticeEvent.RUN_FAILED: None,
    NoticeEvent.RUN_SUCCEEDED: None,
}

# Old spellings of log types that rows may still hold → the current member. Empty: no type has
# been renamed. A rename adds its old text here instead of rewriting stored rows.
LEGACY_EVENT_TYPES: Mapping[str, EventType] = {}


def event_type(text: str) -> EventType:
    """The member for a stored or received type (old spellings included); ValueError if the
    catalog does not know it."""
    legacy = LEGACY_EVENT_TYPES.get(text)
    return legacy if legacy is not None else EventType(text)


def deployment_event(status: str) -> EventType:
    """The event a deployment's move to ``status`` (a DeploymentStatus) is recorded as."""
    return EventType(f"deployment.{status}")


def approval_event(status: str) -> EventType:
    """The event an approval's close with ``status`` (an ApprovalStatus) is recorded as."""
    return EventType(f"approval.{status}")


def types_of(*families: str) -> frozenset[EventType]:
    """Every type of the given families: ``types_of("approval")``."""
    return frozenset(t for t in EventType if t.family in families)
