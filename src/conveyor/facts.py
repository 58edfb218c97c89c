"""The facts DORA is computed from, independent of where they came from (deployments Conveyor
carried out, or history imported from another tool).

Every timestamp is an aware UTC datetime. A fact never changes once written, except a
deployment's ``failed_at``/``restored_at`` and an incident's ``resolved_at``, which are filled in
when they happen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DeploymentKind = Literal["deploy", "rollback"]
DeploymentResult = Literal["succeeded", "failed", "rolled_back"]


@dataclass(frozen=True)
class Change:
    """A commit that a deployment brought to its environment for the first time (the commits
    reachable from the deployed commit and not from the previous successful deployment).

    ``seen_at`` is when Conveyor first saw the commit (push/hook/poll), if known.
    """

    sha: str
    committed_at: dt.datetime
    authored_at: dt.datetime | None = None
    seen_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeploymentFact:
    """One deployment to one environment.

    - ``kind``: ``rollback`` for a deployment that put an earlier release back (excluded from
      deployment frequency and change failure rate, counted as rework).
    - ``result``: how it ended. ``failed_at`` is when its failure was detected (a failed
      health check or verification), if it failed.
    - ``rollback_of``: for a rollback, the id of the deployment it undid.
    - ``fixes_incident``: it was marked as fixing an incident (rework: a deployment made because
      of a production incident).
    - ``served``: it began serving users (``served_at``, if known; else from its start). False:
      it was stopped by its checks before taking traffic (a blue-green candidate whose check
      failed before the switch): no change failure, "caught before production traffic".
    - ``changes``: its commit range (empty for rollbacks); lead time is measured per change.
    - ``stages``: when the deployed release passed each point of the value stream, for the
      lead-time split: ``run_started``, ``run_finished``, ``staging_finished``,
      ``approval_requested``, ``approval_decided`` (any may be missing).
    """

    id: str
    service: str
    environment: str
    tier: str
    kind: DeploymentKind
    result: DeploymentResult
    sha: str
    started_at: dt.datetime
    finished_at: dt.datetime
    failed_at: dt.datetime | None = None
    rollback_of: str | None = None
    fixes_incident: bool = False
    changes: tuple[Change, ...] = ()
    stages: Mapping[str, dt.datetime] = field(default_factory=dict)
    served: bool = True
    served_at: dt.datetime | None = None

    @property
    def serving_from(self) -> dt.datetime | None:
        """When it began serving users (its start when not known); None: never."""
        return (self.served_at or self.started_at) if self.served else None


@dataclass(frozen=True)
class IncidentFact:
    """A production failure. ``deployment`` names the deployment it is attributed to
    explicitly (or None: attribution by window applies). ``id`` names it as people know it (an
    imported incident by its own id); ``ref`` is Conveyor's record of it, when it is stored."""

    id: str
    service: str
    opened_at: dt.datetime
    resolved_at: dt.datetime | None = None
    environment: str | None = None
    deployment: str | None = None
    title: str = ""
    ref: str | None = None
