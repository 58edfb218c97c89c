"""Prometheus metrics read from the store: a custom collector for a dedicated registry.

Two kinds of figures:

- **Gauges** (what is in progress now: runs, jobs, deployments, pending approvals, open
  incidents, how far event consumers lag) are read on each scrape with small indexed queries
  (``status IN (...)`` on indexed status columns, grouped).
- **Counters and histograms** (deployments, lead time, run/job durations, queue and approval
  waits, ...) are the whole history of the store. They are kept in memory and brought up to date
  at each scrape by reading only what was appended since the previous one: the event log, the
  deployment facts and the change facts, each in id order (`Tail`). A new server reads the
  history once (spread over several scrapes if it is long, see ``budget``) and exports these
  families only once it has caught up, so a counter never shows a partial total. Their series
  start at 0 (see ``families.Family`` and ``_History.know``), so that Prometheus's increase()
  counts the first event.

Every value comes from the store, so any server process of a cluster exports the same totals;
a restarted server exports the same totals again (no counter reset).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Executable

from conveyor import __version__
from conveyor.delivery.cdevents import CURSOR as CDEVENTS_CURSOR
from conveyor.deploy_states import DEPLOYMENT_OPEN
from conveyor.events import EventType
from conveyor.metrics.families import Family, Flow, Recovery, seconds_between
from conveyor.states import JOB_TERMINAL, RUN_TERMINAL
from conveyor.store.db import Store
from conveyor.store.models import (
    Approval,
    ChangeFactRow,
    Deployment,
    DeploymentFactRow,
    EnvironmentState,
    Event,
    EventCursor,
    Incident,
    Job,
    Run,
    Service,
)
from conveyor.store.tail import GAP_GRACE_SECONDS, Tail

__all__ = [
    "APPROVAL_BUCKETS",
    "DURATION_BUCKETS",
    "LEAD_TIME_BUCKETS",
    "QUEUE_BUCKETS",
    "RESOLUTION_BUCKETS",
    "StoreCollector",
    "Tail",
    "metrics_registry",
]

log = logging.getLogger("conveyor.metrics")

# Bucket bounds in seconds. Lead time has the DORA band edges (1 h, 1 d, 1 w, 30 d, 180 d) so
# that the share of changes in each band is exact.
LEAD_TIME_BUCKETS: tuple[float, ...] = (
    300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600,
    604800, 1209600, 2592000, 7776000, 15552000,
)  # fmt: skip
DURATION_BUCKETS: tuple[float, ...] = (
    1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
)  # fmt: skip
QUEUE_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
APPROVAL_BUCKETS: tuple[float, ...] = (
    60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800,
)  # fmt: skip
RESOLUTION_BUCKETS: tuple[float, ...] = (
    60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800, 2592000,
)  # fmt: skip

RUN_ACTIVE = ("queued", "running")
JOB_ACTIVE = ("queued", "running")
APPROVAL_KINDS = ("approval", "inconclusive")
# The event that decides an approval, and the result it gives.
APPROVAL_ENDS = {
    EventType.APPROVAL_APPROVED: "approved",
    EventType.APPROVAL_REJECTED: "rejected",
    EventType.APPROVAL_EXPIRED: "expired",
}
# The event types the history families read (everything else in the log is skipped).
EVENT_TYPES = (
    EventType.PIPELINERUN_QUEUED,
    EventType.PIPELINERUN_STARTED,
    EventType.PIPELINERUN_FINISHED,
    EventType.TASKRUN_QUEUED,
    EventType.TASKRUN_STARTED,
    EventType.TASKRUN_FINISHED,
    EventType.APPROVAL_REQUESTED,
    EventType.APPROVAL_APPROVED,
    EventType.APPROVAL_REJECTED,
    EventType.APPROVAL_EXPIRED,
    EventType.APPROVAL_WITHDRAWN,
    EventType.INCIDENT_OPENED,
    EventType.INCIDENT_RESOLVED,
    EventType.CDEVENTS_DROPPED,
)

# The label values every known environment's deployment series are exported with at 0:
# kind, and (result, served). A deployment that succeeded served; one that failed or was rolled
# back may have been stopped before it took traffic.
DEPLOYMENT_KINDS = ("deploy", "rollback")
DEPLOYMENT_OUTCOMES = (
    ("succeeded", "true"),
    ("failed", "true"),
    ("failed", "false"),
    ("rolled_back", "true"),
    ("rolled_back", "false"),
)
# A new server reads the history in batches of this many rows.
BATCH = 5000
# The first production deployment of a service may bring its whole history; only the commits
# made within this window before it count for lead time here.
FIRST_DEPLOYMENT_LOOKBACK = dt.timedelta(days=30)


def _int(value: Any) -> int:
    """An id from an event's data (0 when it has none, or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _flow(noun: str, what: str, took: str, waited: str, events: tuple[str, str, str]) -> Flow:
    """The families of a flow of ``noun`` (run, job): ``what`` ended by service and status
    (conveyor_<noun>s_finished), how long they took and how long they waited to start; followed
    through ``events`` (the types of one queued, started, finished)."""
    return Flow(
        events=events,
        queue=Family(f"conveyor_{noun}_queue_wait_seconds", waited, ("service",), QUEUE_BUCKETS),
        finished=Family(
            f"conveyor_{noun}s_finished",
            f"{what} that ended, by service and status.",
            ("service", "status"),
        ),
        duration=Family(f"conveyor_{noun}_duration_seconds", took, ("service",), DURATION_BUCKETS),
    )


class _History:
    """Counters and histograms over the store's whole history, brought up to date
    incrementally from three append-only tables."""

    def __init__(self, *, grace: float, lookback: dt.timedelta) -> None:
        self.lookback = lookback
        self.events = Tail(grace=grace)
        self.facts = Tail(grace=grace)
        self.changes = Tail(grace=grace)
        self.caught_up = False
        F = Family
        self.deployments = F(
            "conveyor_deployments",
            "Deployments that ended, by service, environment, tier; kind: deploy (a release "
            "rolled out) or rollback (an earlier release put back); result: succeeded, failed "
            "(a check failed) or rolled_back (it failed and a rollback undid it); served: true "
            "if it took users' traffic, false if its checks stopped it before any traffic "
            "reached it (caught before production traffic: no change failure); source: conveyor "
            "or the source of an import. Every series starts at 0.",
            ("service", "environment", "tier", "kind", "result", "served", "source"),
        )
        self.deployment_duration = F(
            "conveyor_deployment_duration_seconds",
            "How long deployments took, from start to their end (rollbacks included; how each "
            "ended is conveyor_deployments' result).",
            ("service", "environment", "tier"),
            DURATION_BUCKETS,
        )
        self.recovery_time = F(
            "conveyor_deployment_recovery_seconds",
            "Failed deployment recovery time: per deployment (kind deploy) that served users and "
            "failed or was rolled back, from its failure's detection (its failed check, else its "
            "end) to the end of the first healthy deployment (a rollback or a new release) of "
            "its environment after that. An incident resolved sooner is not seen here.",
            ("service", "environment", "tier"),
            RESOLUTION_BUCKETS,
        )
        self.lead_time = F(
            "conveyor_lead_time_seconds",
            "Lead time for changes: per commit, from its commit time to the end of the first "
            "successful production deployment (kind deploy) that brought it.",
            ("service",),
            LEAD_TIME_BUCKETS,
        )
        self._runs = _flow(
            "run",
            "Pipeline runs",
            "How long pipeline runs took, from start to end (runs that never started are "
            "not observed; how each ended is conveyor_runs_finished's status).",
            "How long runs waited between being queued and starting.",
            (
                EventType.PIPELINERUN_QUEUED,
                EventType.PIPELINERUN_STARTED,
                EventType.PIPELINERUN_FINISHED,
            ),
        )
        self._jobs = _flow(
            "job",
            "Jobs",
            "How long jobs took on their runner, from start to end (how each ended is "
            "conveyor_jobs_finished's status).",
            "How long jobs waited between being ready (queued) and a runner starting them.",
            (EventType.TASKRUN_QUEUED, EventType.TASKRUN_STARTED, EventType.TASKRUN_FINISHED),
        )
        self.approval_wait = F(
            "conveyor_approval_wait_seconds",
            "How long approvals waited for a decision (approval gates and inconclusive "
            "checks; how each was decided is conveyor_approvals_decided).",
            ("service", "environment"),
            APPROVAL_BUCKETS,
        )
        self.approvals_decided = F(
            "conveyor_approvals_decided",
            "Approvals decided, by kind (approval: a gate; inconclusive: checks a person had "
            "to judge) and result (approved, rejected, expired).",
            ("service", "environment", "kind", "result"),
        )
        self.incidents_opened = F(
            "conveyor_incidents_opened",
            "Incidents opened in Conveyor, by service (imported ones are not counted).",
            ("service",),
        )
        self.incident_resolution = F(
            "conveyor_incident_resolution_seconds",
            "How long incidents stayed open, from opening to resolution.",
            ("service",),
            RESOLUTION_BUCKETS,
        )
        self.cdevents_dropped = F(
            "conveyor_cdevents_dropped",
            "CDEvents a sink was given up on (after its retries, or refused), by sink host.",
            ("sink",),
        )
        self._recovery = Recovery(self.recovery_time)
        # What is in flight, to measure waits when it ends (runs and jobs: their flows):
        # approval id -> (requested time, service, environment, kind).
        self._approvals: dict[int, tuple[dt.datetime, str, str, str]] = {}
        # The first successful production deployment of each (service, environment).
        self._first: dict[tuple[str, str], tuple[dt.datetime, int]] = {}
        # What ``know`` has exported at 0 already.
        self._services: set[str] = set()
        self._environments: set[tuple[str, str, str, str]] = set()
        self._sinks: set[str] = set()

    def families(self) -> list[Family]:
        return [
            self.deployments,
            self.deployment_duration,
            self.recovery_time,
            self.lead_time,
            self._runs.finished,
            self._runs.duration,
            self._runs.queue,
            self._jobs.finished,
            self._jobs.duration,
            self._jobs.queue,
            self.approval_wait,
            self.approvals_decided,
            self.incidents_opened,
            self.incident_resolution,
            self.cdevents_dropped,
        ]

    def refresh(self, store: Store, deadline: float) -> bool:
        """Read what was appended since the last refresh, until caught up or past the deadline
        (monotonic); True if caught up."""
        done = True
        with store.session() as session:
            for step in (self._read_events, self._read_facts, self._read_changes):
                while True:
                    more = step(session)
                    if not more:
                        break
                    if time.monotonic() > deadline:
                        done = False
                        break
                if not done:
                    break
            if done:
                self.know(session)
        if done:
            self.caught_up = True
        return done

    # --- the series exported at 0 before anything happens -------------------------------------

    def know(self, session: Session) -> None:
        """Export at 0 every counter and histogram of every service, environment (of Conveyor's
        own and of imports) and CDEvents sink the store knows, so that their first event is an
        increase Prometheus sees and a window without any event gives 0, not nothing. That is
        why histograms carry few labels (how a run or deployment ended, or an approval was
        decided, is on the counters): a dozen buckets for each status of each environment would
        make a large installation's scrape weigh megabytes (bench/README.md, exposition)."""
        for service in session.scalars(select(Service.name)):
            self._service(service)
        for service, environment, tier in session.execute(
            select(Service.name, EnvironmentState.name, EnvironmentState.tier).join(
                Service, Service.id == EnvironmentState.service_id
            )
        ):
            self._environment(service, environment, tier, "conveyor")
        for (name,) in session.execute(
            select(EventCursor.name).where(EventCursor.name.like(f"{CDEVENTS_CURSOR}:%"))
        ):
            sink = name.removeprefix(f"{CDEVENTS_CURSOR}:").rpartition(":")[0]
            if sink and sink not in self._sinks:
                self._sinks.add(sink)
                self.cdevents_dropped.ensure((sink,))

    def _service(self, service: str) -> None:
        if service in self._services:
            return
        self._services.add(service)
        for family in (self.lead_time, self.incidents_opened, self.incident_resolution):
            family.ensure((service,))
        self._runs.ensure(service, RUN_TERMINAL)
        self._jobs.ensure(service, JOB_TERMINAL)

    def _environment(self, service: str, environment: str, tier: str, source: str) -> None:
        key = (service, environment, tier, source)
        if key in self._environments:
            return
        self._environments.add(key)
        self._service(service)
        for kind in DEPLOYMENT_KINDS:
            for result, served in DEPLOYMENT_OUTCOMES:
                self.deployments.ensure((service, environment, tier, kind, result, served, source))
        self.deployment_duration.ensure((service, environment, tier))
        self.recovery_time.ensure((service, environment, tier))
        if source == "conveyor":  # imported history has no approvals
            self.approval_wait.ensure((service, environment))
            for approval_kind in APPROVAL_KINDS:
                for result in APPROVAL_ENDS.values():
                    self.approvals_decided.ensure((service, environment, approval_kind, result))

    # --- the event log -----------------------------------------------------------------------

    def _read_events(self, session: Session) -> bool:
        ids = self.events.next_ids(session, Event.id, BATCH)
        if not ids:
            return False
        rows = session.connection().execute(
            select(Event.id, Event.ts, Event.type, Event.service, Event.run_id, Event.job_id,
                   Event.data)
            .where(Event.id > self.events.position, Event.id <= ids[-1],
                   Event.type.in_(EVENT_TYPES))
            .order_by(Event.id)
        ).all()  # fmt: skip
        resolved = [_int((r.data or {}).get("incident")) for r in rows
                    if r.type == EventType.INCIDENT_RESOLVED]  # fmt: skip
        durations = self._resolution_times(session, resolved)
        for row in rows:
            try:
                self._apply(row, durations)
            except (TypeError, ValueError, AttributeError):  # an odd event is skipped, not fatal
                log.warning("/metrics: event %s (%s) has odd data; skipped", row.id, row.type)
        self.events.advance(ids[-1])
        return len(ids) == BATCH

    def _resolution_times(self, session: Session, ids: list[int]) -> dict[int, float]:
        if not ids:
            return {}
        rows = session.execute(
            select(Incident.id, Incident.opened_at, Incident.resolved_at).where(
                Incident.id.in_(ids)
            )
        ).all()
        return {r.id: seconds_between(r.resolved_at, r.opened_at) for r in rows if r.resolved_at}

    def _apply(self, row: Any, resolution: dict[int, float]) -> None:
        kind: str = row.type
        data: dict[str, Any] = row.data or {}
        service = row.service or ""
        if self._runs.follow(kind, row.run_id, row.ts, service, data):
            return
        if self._jobs.follow(kind, row.job_id, row.ts, service, data):
            return
        if kind == EventType.APPROVAL_REQUESTED and data.get("approval") is not None:
            self._approvals[int(data["approval"])] = (
                row.ts,
                service,
                str(data.get("environment") or ""),
                str(data.get("kind") or "approval"),
            )
        elif kind in APPROVAL_ENDS or kind == EventType.APPROVAL_WITHDRAWN:
            requested = self._approvals.pop(_int(data.get("approval")), None)
            if requested is not None and kind in APPROVAL_ENDS:
                at, svc, environment, approval_kind = requested
                result = APPROVAL_ENDS[EventType(kind)]
                self.approvals_decided.inc((svc, environment, approval_kind, result))
                self.approval_wait.observe((svc, environment), seconds_between(row.ts, at))
        elif kind == EventType.INCIDENT_OPENED:
            self.incidents_opened.inc((service,))
        elif kind == EventType.INCIDENT_RESOLVED:
            took = resolution.get(_int(data.get("incident")))
            if took is not None:
                self.incident_resolution.observe((service,), took)
        elif kind == EventType.CDEVENTS_DROPPED:
            self.cdevents_dropped.inc((str(data.get("sink") or ""),))

    # --- deployment and change facts ---------------------------------------------------------

    def _read_facts(self, session: Session) -> bool:
        ids = self.facts.next_ids(session, DeploymentFactRow.id, BATCH)
        if not ids:
            return False
        F = DeploymentFactRow
        rows = session.connection().execute(
            select(F.id, F.service, F.environment, F.tier, F.kind, F.result, F.source,
                   F.started_at, F.finished_at, F.failed_at, F.served_at)
            .where(F.id > self.facts.position, F.id <= ids[-1])
            .order_by(F.id)
        ).all()  # fmt: skip
        for r in rows:
            self._environment(r.service, r.environment, r.tier, r.source)
            served = "true" if r.served_at is not None or r.result == "succeeded" else "false"
            self.deployments.inc(
                (r.service, r.environment, r.tier, r.kind, r.result, served, r.source)
            )
            where = (r.service, r.environment, r.tier)
            if r.result == "succeeded":
                self._recovery.on_healthy(where, r.finished_at)
            elif r.kind == "deploy" and served == "true":
                self._recovery.on_failed(where, r.failed_at or r.finished_at)
            self.deployment_duration.observe(where, seconds_between(r.finished_at, r.started_at))
            if r.tier == "production" and r.kind == "deploy" and r.result == "succeeded":
                key = (r.service, r.environment)
                first = self._first.get(key)
                if first is None or (r.finished_at, r.id) < first:
                    self._first[key] = (r.finished_at, r.id)
        self.facts.advance(ids[-1])
        return len(ids) == BATCH

    def _read_changes(self, session: Session) -> bool:
        ids = self.changes.next_ids(session, ChangeFactRow.id, BATCH)
        if not ids:
            return False
        C, F = ChangeFactRow, DeploymentFactRow
        conn = session.connection()
        changes = conn.execute(
            select(C.id, C.fact_id, C.committed_at)
            .where(C.id > self.changes.position, C.id <= ids[-1])
            .order_by(C.id)
        ).all()
        # Two queries, not a join: with a join SQLite may start from the facts' tier index
        # and read every production fact for each batch.
        wanted = sorted({c.fact_id for c in changes})
        facts = {
            f.id: f
            for f in conn.execute(
                select(F.id, F.service, F.environment, F.finished_at).where(
                    F.id.in_(wanted),
                    F.tier == "production",
                    F.kind == "deploy",
                    F.result == "succeeded",
                )
            )
        }
        upto = ids[-1]
        for change in changes:
            if change.fact_id > self.facts.position:
                # Its deployment fact committed after the facts were read: next time.
                upto = change.id - 1
                break
            fact = facts.get(change.fact_id)
            if fact is None:
                continue  # not a successful production deployment
            first = self._first.get((fact.service, fact.environment))
            if (
                first is not None
                and first[1] == fact.id
                and change.committed_at < fact.finished_at - self.lookback
            ):
                continue  # the first deployment's history beyond the look-back
            self.lead_time.observe(
                (fact.service,), seconds_between(fact.finished_at, change.committed_at)
            )
        if upto < ids[0]:
            return False
        self.changes.advance(upto)
        return upto == ids[-1] and len(ids) == BATCH


# --- the collector -------------------------------------------------------------------------------


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _timestamp(value: dt.datetime) -> float:
    return value.timestamp()


class StoreCollector(Collector):
    """Reads the store at each scrape (see the module's docstring). Thread-safe: concurrent
    scrapes wait for one another. ``cache_seconds`` reuses the last answer for scrapes that
    come that soon after it; ``budget`` bounds the time one scrape spends catching up on
    history."""

    def __init__(
        self,
        store: Store,
        *,
        cache_seconds: float = 1.0,
        budget: float = 5.0,
        grace: float = GAP_GRACE_SECONDS,
        first_deployment_lookback: dt.timedelta = FIRST_DEPLOYMENT_LOOKBACK,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.budget = budget
        self._history = _History(grace=grace, lookback=first_deployment_lookback)
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = -float("inf")

    def describe(self) -> Iterable[Metric]:
        return []  # no names to check against other collectors: the registry is our own

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if now - self._cached_at >= self.cache_seconds:
                self._cached = self._read(now)
                self._cached_at = time.monotonic()
            metrics = list(self._cached)
        yield from metrics

    def _read(self, started: float) -> list[Metric]:
        metrics: list[Metric] = []
        info = GaugeMetricFamily(
            "conveyor_build_info", "Conveyor's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        metrics.append(info)
        took = time.perf_counter()
        try:
            caught_up = self._history.refresh(self.store, started + self.budget)
        except Exception:  # a broken read must not take the gauges down with it
            log.exception("reading the history for /metrics failed")
            caught_up = False
        if not caught_up:
            log.info("/metrics: still reading the history; its families come once it is read")
        if self._history.caught_up:
            metrics.extend(f.metric() for f in self._history.families())
        with self.store.session() as session:
            metrics.extend(self._gauges(session))
        history = GaugeMetricFamily(
            "conveyor_metrics_history_complete",
            "1 when the history families (counters, histograms) are up to date with the "
            "store, 0 while a new server is still reading it.",
        )
        history.add_metric([], 1.0 if caught_up else 0.0)
        metrics.append(history)
        scrape = GaugeMetricFamily(
            "conveyor_metrics_scrape_duration_seconds",
            "How long reading the store for this scrape took.",
        )
        scrape.add_metric([], time.perf_counter() - took)
        metrics.append(scrape)
        return metrics

    # --- gauges: what is in progress now -----------------------------------------------------

    def _gauges(self, session: Session) -> Iterator[Metric]:
        yield self._runs(session)
        yield self._jobs(session)
        yield from self._deployments(session)
        yield self._approvals(session)
        yield self._incidents(session)
        yield self._lag(session)

    def _runs(self, session: Session) -> Metric:
        counts = _active(session, Run.status, RUN_ACTIVE, (Service, Service.id == Run.service_id))
        # Every service, at 0 when idle, so that graphs and sums have a series to show.
        return _by_status(
            "conveyor_runs_in_progress",
            "Pipeline runs queued or running now.",
            counts,
            RUN_ACTIVE,
            services=set(session.scalars(select(Service.name))),
        )

    def _jobs(self, session: Session) -> Metric:
        counts = _active(
            session,
            Job.status,
            JOB_ACTIVE,
            (Run, Run.id == Job.run_id),
            (Service, Service.id == Run.service_id),
        )
        return _by_status(
            "conveyor_jobs_in_progress",
            "Jobs waiting for a runner (queued) or running now.",
            counts,
            JOB_ACTIVE,
        )

    def _deployments(self, session: Session) -> Iterator[Metric]:
        gauge = _gauge(
            "conveyor_deployments_in_progress",
            "Deployments not ended yet, by status (queued, awaiting_approval, deploying, "
            "checking, verifying, held, rolling_back).",
            ("service", "environment", "tier", "status"),
        )
        oldest = _gauge(
            "conveyor_deployment_oldest_start_time_seconds",
            "Start time (Unix seconds) of the oldest deployment in each status: when it began "
            "deploying, or was queued if it has not begun. For 'stuck deployment' alerts.",
            ("service", "environment", "tier", "status"),
        )
        since = func.min(func.coalesce(Deployment.started_at, Deployment.created_at))
        rows = session.execute(
            select(Service.name, Deployment.environment, Deployment.tier, Deployment.status,
                   func.count(), since)
            .join(Service, Service.id == Deployment.service_id)
            .where(Deployment.status.in_(sorted(DEPLOYMENT_OPEN)))
            .group_by(Service.name, Deployment.environment, Deployment.tier, Deployment.status)
        ).all()  # fmt: skip
        for service, environment, tier, status, count, first in sorted(rows, key=_first4):
            labels = [service, environment, tier, status]
            gauge.add_metric(labels, count)
            if first is not None:
                oldest.add_metric(labels, _timestamp(_aware(first)))
        yield gauge
        yield oldest

    def _approvals(self, session: Session) -> Metric:
        counts = _counts(
            session,
            select(Service.name, Deployment.environment, Approval.kind, func.count())
            .join(Deployment, Deployment.id == Approval.deployment_id)
            .join(Service, Service.id == Deployment.service_id)
            .where(Approval.status == "pending")
            .group_by(Service.name, Deployment.environment, Approval.kind),
        )
        return _counted(
            "conveyor_approvals_pending",
            "Approvals waiting for a decision now.",
            ("service", "environment", "kind"),
            counts,
        )

    def _incidents(self, session: Session) -> Metric:
        env = aliased(EnvironmentState)
        rows = session.execute(
            select(Service.name, Incident.environment, env.tier, func.count())
            .join(Service, Service.id == Incident.service_id)
            .outerjoin(
                env,
                and_(env.service_id == Incident.service_id, env.name == Incident.environment),
            )
            .where(Incident.status == "open")
            .group_by(Service.name, Incident.environment, env.tier)
        ).all()
        merged: dict[tuple[str, ...], int] = {}
        for service, environment, tier, count in rows:
            key = (service, environment or "", tier or "production")
            merged[key] = merged.get(key, 0) + int(count)
        return _counted(
            "conveyor_incidents_open",
            "Incidents open now, by service, environment and its tier (an incident without "
            "an environment counts as production: incidents are production failures).",
            ("service", "environment", "tier"),
            merged,
        )

    def _lag(self, session: Session) -> Metric:
        gauge = _gauge(
            "conveyor_event_consumer_lag_events",
            "Events in the log that a consumer (the CDEvents sender, per sink) has not "
            "handled yet.",
            ("consumer",),
        )
        cursors = session.execute(select(EventCursor.name, EventCursor.last_event_id)).all()
        if cursors:
            last = session.scalar(select(func.max(Event.id))) or 0
            for name, position in sorted(cursors):
                gauge.add_metric([name], max(0, last - int(position)))
        return gauge


def _by_status(
    name: str,
    documentation: str,
    counts: Mapping[tuple[str, ...], int],
    statuses: Iterable[str],
    *,
    services: Iterable[str] = (),
) -> Metric:
    """A gauge by service and status from ``counts``: every one of ``statuses`` for each
    service counted or in ``services``, at 0 when there is none."""
    gauge = _gauge(name, documentation, ("service", "status"))
    for service in sorted({*services, *(key[0] for key in counts)}):
        for status in statuses:
            gauge.add_metric([service, status], counts.get((service, status), 0))
    return gauge


def _counted(
    name: str, documentation: str, labels: Sequence[str], counts: Mapping[tuple[str, ...], int]
) -> Metric:
    """A gauge with a series for each counted key (its label values), in order."""
    gauge = _gauge(name, documentation, labels)
    for key in sorted(counts):
        gauge.add_metric(list(key), counts[key])
    return gauge


def _active(
    session: Session, status: Any, active: Sequence[str], *joins: tuple[Any, Any]
) -> dict[tuple[str, ...], int]:
    """How many rows are in each of the ``active`` statuses (``status``, their column) now, by
    service name; ``joins`` lead from their table to Service."""
    query = select(Service.name, status, func.count())
    for target, on in joins:
        query = query.join(target, on)
    return _counts(session, query.where(status.in_(active)).group_by(Service.name, status))


def _counts(session: Session, query: Executable) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for row in session.execute(query).all():
        *key, count = row
        out[tuple(str(k) for k in key)] = int(count)
    return out


def _first4(row: Any) -> tuple[str, str, str, str]:
    return (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


def _aware(value: dt.datetime) -> dt.datetime:
    # min() over a UTC column comes back without the column's type on some backends.
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def metrics_registry(store: Store, **options: Any) -> CollectorRegistry:
    """A registry of Conveyor's metrics for ``store`` plus the process's own (memory, CPU,
    open files, Python's GC), separate from prometheus_client's global registry."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, **options))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
