"""CDEvents: Conveyor's runs, deployments and incidents, sent to HTTP sinks as CloudEvents.

Mapping (CDEvents spec 0.4.1; see docs/observability.md for the table):

- ``pipelinerun.queued|started|finished`` -> ``dev.cdevents.pipelinerun.<same>.0.2.0``
- ``taskrun.started|finished`` (jobs that ran) -> ``dev.cdevents.taskrun.<same>.0.2.0``
- ``deployment.succeeded`` -> ``dev.cdevents.service.deployed.0.2.0`` (first release in that
  environment), ``service.upgraded.0.2.0`` (it replaced one), ``service.rolledback.0.2.0``
  (a rollback deployment put an earlier release back)
- ``incident.opened`` -> ``dev.cdevents.incident.detected.0.2.0``; ``incident.resolved`` ->
  ``dev.cdevents.incident.resolved.0.2.0``

Each CDEvent travels in one CloudEvent (spec 1.0, HTTP binding, structured mode: the body is
the whole CloudEvent as JSON, ``Content-Type: application/cloudevents+json``), whose ``data``
is the CDEvent. Ids are derived from the event log (the event's id and time), so the same
occurrence always has the same id: a receiver deduplicates on ``source`` + ``id``.

`CDEventsSender` reads the event log in order after a cursor kept in the store (one
``event_cursors`` row per sink, ``cdevents:<host>:<hash>``; the row ``cdevents`` is where every
sink has got to), posts each mapped event to each sink with retries, and moves the sink's cursor
only once the event was delivered or given up on (recorded as a ``cdevents.dropped`` event). Each
sink has its own loop, so a sink that is down delays only itself. Delivery is at least once: a
crash between a delivery and the cursor's write sends that event again, with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.aio import wake_loop
from conveyor.events import EventType
from conveyor.notify.base import NotifyError
from conveyor.notify.send import backoff_delay
from conveyor.notify.webhook import USER_AGENT, post
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    Deployment,
    Event,
    EventCursor,
    Incident,
    Release,
    Run,
    utcnow,
)
from conveyor.store.tail import GAP_GRACE_SECONDS, Tail

__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "CURSOR",
    "SPEC_VERSION",
    "CDEventsSender",
    "Mapper",
    "cloudevent_request",
    "sink_key",
]

log = logging.getLogger("conveyor.cdevents")

SPEC_VERSION = "0.4.1"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
# The row that says how far every configured sink has got.
CURSOR = "cdevents"
# Where ids come from: uuid5(this namespace, "<event id>|<event time>|<CDEvent type>").
NAMESPACE = uuid.UUID("6f1d3c52-8f0e-5b8e-9a57-3c0f6d1c2b7a")
DEFAULT_SOURCE = "/conveyor"

# The Conveyor event types that become CDEvents (the sender wakes on these).
MAPPED = frozenset(
    {
        EventType.PIPELINERUN_QUEUED,
        EventType.PIPELINERUN_STARTED,
        EventType.PIPELINERUN_FINISHED,
        EventType.TASKRUN_STARTED,
        EventType.TASKRUN_FINISHED,
        EventType.DEPLOYMENT_SUCCEEDED,
        EventType.INCIDENT_OPENED,
        EventType.INCIDENT_RESOLVED,
    }
)
OUTCOMES = {
    "succeeded": "success",
    "failed": "failure",
    "cancelled": "error",
    "interrupted": "error",
}


def cdevent_type(subject: str, predicate: str, version: str = "0.2.0") -> str:
    return f"dev.cdevents.{subject}.{predicate}.{version}"


def _time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, as CDEvents and CloudEvents expect."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sink_key(url: str) -> str:
    """The cursor row of a sink: its host (readable in metrics) and a hash of the whole URL
    (which may carry a credential in its path or query, so it is never stored)."""
    parsed = httpx.URL(url)
    host = parsed.host or "?"
    if parsed.port:
        host = f"{host}:{parsed.port}"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{CURSOR}:{host}:{digest}"


def _sink_label(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host or "?"


def artifact_id(service: str, version: str, publication: dict[str, Any]) -> str:
    """A package URL for a release: the OCI artifact it was published as (by digest), else a
    generic one named by the service and the release's version."""
    reference, digest = publication.get("reference"), publication.get("digest")
    if publication.get("status") == "published" and reference and digest:
        return oci_purl(str(reference), str(digest))
    return f"pkg:generic/{quote(service, safe='')}@{quote(version, safe='')}"


def oci_purl(reference: str, digest: str) -> str:
    """The package URL of an OCI artifact or image: its repository (tag dropped) and digest."""
    repository = reference.split("@", 1)[0]
    if repository.rfind(":") > repository.rfind("/"):
        repository = repository[: repository.rfind(":")]  # a tag
    name = repository.rsplit("/", 1)[-1].lower()
    return (
        f"pkg:oci/{quote(name, safe='')}@{quote(digest, safe='')}"
        f"?repository_url={quote(repository, safe='/:')}"
    )


@dataclass(frozen=True)
class LogEvent:
    """One row of the event log, as the mapper reads it."""

    id: int
    ts: dt.datetime
    type: str
    service: str | None
    run_id: int | None
    job_id: int | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Any) -> LogEvent:
        return cls(row.id, row.ts, row.type, row.service, row.run_id, row.job_id, row.data or {})


def _outcome(content: dict[str, Any], event: LogEvent, status: str) -> None:
    """A finished run's or task's outcome, and for one that did not succeed, why."""
    content["outcome"] = OUTCOMES.get(status, "error")
    if status != "succeeded":
        content["errors"] = str(event.data.get("reason") or status)


class Mapper:
    """Turns an event of the log into a CloudEvent carrying a CDEvent (or None when the event
    has no CDEvents counterpart). Reads what the event does not say (a deployment's release,
    an incident's title) from the store, in the session it is given."""

    def __init__(self, source: str | None = None, base_url: str | None = None) -> None:
        # CONVEYOR_BASE_URL, as the server read it.
        self.base_url = base_url.rstrip("/") if base_url else ""
        self.source = source or self.base_url or DEFAULT_SOURCE

    def url(self, path: str) -> str:
        """A link to the API resource: absolute when CONVEYOR_BASE_URL is set."""
        return f"{self.base_url}/api/v1{path}"

    def map(self, session: Session, event: LogEvent) -> dict[str, Any] | None:
        if event.type.startswith("pipelinerun."):
            return self._pipelinerun(session, event)
        if event.type in (EventType.TASKRUN_STARTED, EventType.TASKRUN_FINISHED):
            return self._taskrun(session, event)
        if event.type == EventType.DEPLOYMENT_SUCCEEDED:
            return self._deployment(session, event)
        if event.type in (EventType.INCIDENT_OPENED, EventType.INCIDENT_RESOLVED):
            return self._incident(session, event)
        return None

    # --- building blocks -----------------------------------------------------------------------

    def _envelope(
        self,
        event: LogEvent,
        type_: str,
        subject: dict[str, Any],
        custom: dict[str, Any],
        chain: str | None,
        when: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The CloudEvent of ``event``: its id depends only on the logged event, so that it is
        the same whenever (and however often) it is sent. ``when`` is the time of the
        occurrence when it is not the event's own (an alert that began before it was heard)."""
        event_id = str(uuid.uuid5(NAMESPACE, f"{event.id}|{event.ts.isoformat()}|{type_}"))
        context: dict[str, Any] = {
            "version": SPEC_VERSION,
            "id": event_id,
            "source": self.source,
            "type": type_,
            "timestamp": _time(when or event.ts),
        }
        if chain is not None:
            context["chainId"] = chain
        custom = {"event": event.type, "eventId": event.id, "service": event.service} | custom
        cdevent = {
            "context": context,
            "subject": subject,
            "customData": {k: v for k, v in custom.items() if v is not None},
            "customDataContentType": "application/json",
        }
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source,
            "type": type_,
            "subject": subject["id"],
            "time": context["timestamp"],
            "datacontenttype": "application/json",
            "data": cdevent,
        }

    def _chain(self, run: Run | None) -> str | None:
        """One chain per run: its pipeline run, jobs, the deployments of its release and the
        incidents attributed to them share it."""
        if run is None:
            return None
        return str(uuid.uuid5(NAMESPACE, f"chain|{run.id}|{run.created_at.isoformat()}"))

    def _ref(self, id_: str) -> dict[str, str]:
        return {"id": id_, "source": self.source}

    def _subject(self, id_: str, type_: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"id": id_, "source": self.source, "type": type_, "content": content}

    # --- runs and jobs ---------------------------------------------------------------------------

    def _pipelinerun(self, session: Session, event: LogEvent) -> dict[str, Any] | None:
        predicate = event.type.removeprefix("pipelinerun.")
        if predicate not in ("queued", "started", "finished") or event.run_id is None:
            return None
        run = session.get(Run, event.run_id)
        content: dict[str, Any] = {
            "pipelineName": event.service or "",
            "url": self.url(f"/runs/{event.run_id}"),
        }
        status = str(event.data.get("status", ""))
        if predicate == "finished":
            _outcome(content, event, status)
        subject = self._subject(f"runs/{event.run_id}", "pipelineRun", content)
        custom = {
            "runId": event.run_id,
            "sha": run.sha if run else event.data.get("sha"),
            "ref": run.ref if run else event.data.get("ref"),
            "trigger": run.trigger if run else event.data.get("trigger"),
            "status": status or None,
            "reason": event.data.get("reason"),
            "durationSeconds": event.data.get("duration"),
        }
        return self._envelope(event, cdevent_type("pipelinerun", predicate), subject, custom,
                              self._chain(run))  # fmt: skip

    def _taskrun(self, session: Session, event: LogEvent) -> dict[str, Any] | None:
        predicate = event.type.removeprefix("taskrun.")
        if event.job_id is None or event.run_id is None:
            return None
        if predicate == "finished" and "duration" not in event.data:
            return None  # it never started (skipped, or cancelled while waiting): no task ran
        run = session.get(Run, event.run_id)
        status = str(event.data.get("status", ""))
        content: dict[str, Any] = {
            "taskName": str(event.data.get("job", "")),
            "url": self.url(f"/runs/{event.run_id}"),
            "pipelineRun": self._ref(f"runs/{event.run_id}"),
        }
        if predicate == "finished":
            _outcome(content, event, status)
        subject = self._subject(f"jobs/{event.job_id}", "taskRun", content)
        custom = {
            "runId": event.run_id,
            "jobId": event.job_id,
            "sha": run.sha if run else None,
            "status": status if predicate == "finished" else None,
            "reason": event.data.get("reason"),
            "durationSeconds": event.data.get("duration"),
        }
        return self._envelope(event, cdevent_type("taskrun", predicate), subject, custom,
                              self._chain(run))  # fmt: skip

    # --- deployments -----------------------------------------------------------------------------

    def _release_facts(self, release: Release | None, service: str) -> tuple[str, str | None]:
        if release is None:
            return f"pkg:generic/{quote(service, safe='')}", None
        version = f"r{release.id}-{release.sha[:7]}"
        return artifact_id(service, version, dict(release.publication or {})), version

    def _deployment(self, session: Session, event: LogEvent) -> dict[str, Any] | None:
        dep = session.get(Deployment, int(event.data.get("deployment") or 0))
        if dep is None:
            return None
        service = event.service or ""
        release = session.get(Release, dep.release_id)
        if dep.kind == "rollback":
            predicate = "rolledback"
        elif dep.previous_release_id is None:
            predicate = "deployed"
        else:
            predicate = "upgraded"
        artifact, version = self._release_facts(release, service)
        # What was deployed: the image a container target ran, pinned by digest, rather than
        # the release's own published files.
        deployed = str((dep.instance or {}).get("pinned") or "")
        if "@sha256:" in deployed:
            artifact = oci_purl(deployed, deployed.split("@", 1)[1])
        subject = self._subject(
            f"services/{service}",
            "service",
            {"environment": self._ref(dep.environment), "artifactId": artifact},
        )
        custom = {
            "deploymentId": dep.id,
            "environment": dep.environment,
            "tier": dep.tier,
            "kind": dep.kind,
            "trigger": dep.trigger,
            "releaseId": dep.release_id,
            "version": version,
            "sha": release.sha if release else None,
            "previousReleaseId": dep.previous_release_id,
            "rollbackOf": dep.rollback_of,
            "url": dep.url,
            "link": self.url(f"/deployments/{dep.id}"),
        }
        run = session.get(Run, release.run_id) if release else None
        return self._envelope(event, cdevent_type("service", predicate), subject, custom,
                              self._chain(run))  # fmt: skip

    # --- incidents -------------------------------------------------------------------------------

    def _incident(self, session: Session, event: LogEvent) -> dict[str, Any] | None:
        incident = session.get(Incident, int(event.data.get("incident") or 0))
        if incident is None:
            return None
        service = event.service or ""
        predicate = "detected" if event.type == EventType.INCIDENT_OPENED else "resolved"
        content: dict[str, Any] = {
            "description": incident.title,
            # Incidents are production failures; one without an environment is production's.
            "environment": self._ref(incident.environment or "production"),
            "service": self._ref(f"services/{service}"),
        }
        release = session.get(Release, incident.release_id) if incident.release_id else None
        run = None
        if release is not None:
            content["artifactId"], _ = self._release_facts(release, service)
            run = session.get(Run, release.run_id)
        subject = self._subject(f"incidents/{incident.id}", "incident", content)
        custom = {
            "incidentId": incident.id,
            "environment": incident.environment,
            "origin": incident.source,
            "deploymentId": incident.deployment_id,
            "releaseId": incident.release_id,
            "resolvedBy": event.data.get("resolved_by"),
            "link": self.url("/incidents"),
        }
        when = incident.opened_at if predicate == "detected" else incident.resolved_at
        return self._envelope(event, cdevent_type("incident", predicate), subject, custom,
                              self._chain(run), when)  # fmt: skip


def cloudevent_request(cloudevent: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery in the CloudEvents HTTP structured mode."""
    body = json.dumps(cloudevent, sort_keys=True, separators=(",", ":")).encode()
    return body, {"Content-Type": CLOUDEVENTS_CONTENT_TYPE, "User-Agent": USER_AGENT}


# --- the sender --------------------------------------------------------------------------------


@dataclass
class _Sink:
    url: str
    key: str
    label: str
    tail: Tail
    wake: asyncio.Event | None = None


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    attempts: int
    error: str | None = None


class CDEventsSender:
    """Sends every mapped event of the log to each sink (see the module's docstring).

    ``attempts`` and ``backoff`` (doubling, capped at ``max_backoff``) bound the retries of one
    event to one sink: connection errors, timeouts, HTTP 5xx and 429 are retried; other answers
    (4xx, redirects) are not. After that the event is given up on for that sink, recorded, and
    the sink goes on with the next one."""

    def __init__(
        self,
        store: Store,
        sinks: Sequence[str],
        *,
        source: str | None = None,
        base_url: str | None = None,
        attempts: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        poll_seconds: float = 1.0,
        batch: int = 200,
        grace: float = GAP_GRACE_SECONDS,
    ) -> None:
        self.store = store
        self.mapper = Mapper(source, base_url)
        self.attempts, self.backoff, self.max_backoff = max(1, attempts), backoff, max_backoff
        self.timeout, self.poll_seconds, self.batch = timeout, poll_seconds, batch
        unique = list(dict.fromkeys(s.strip() for s in sinks if s.strip()))
        self.sinks = [
            _Sink(url, sink_key(url), _sink_label(url), Tail(grace=grace)) for url in unique
        ]
        self._loaded = False
        self._lock = threading.Lock()

    # --- running ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Send until cancelled; wakes when this process commits a mapped event, and polls for
        the events of other server processes."""
        loop = asyncio.get_running_loop()
        for sink in self.sinks:
            sink.wake = asyncio.Event()
        unsubscribe = self.store.subscribe(self._listener(loop))
        try:
            async with asyncio.TaskGroup() as group:
                for sink in self.sinks:
                    group.create_task(self._serve_sink(sink))
        finally:
            unsubscribe()

    async def drain(self) -> None:
        """Deliver (or give up on) everything in the log now, to every sink, and return."""
        await asyncio.gather(*(self._drain_sink(sink) for sink in self.sinks))

    def _listener(self, loop: asyncio.AbstractEventLoop) -> Callable[[Event], None]:
        loop_thread = threading.get_ident()

        def heard(ev: Event) -> None:
            if ev.type not in MAPPED:
                return
            for sink in self.sinks:
                if sink.wake is None:
                    continue
                if threading.get_ident() == loop_thread:
                    sink.wake.set()
                else:
                    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                        loop.call_soon_threadsafe(sink.wake.set)

        return heard

    async def _serve_sink(self, sink: _Sink) -> None:
        assert sink.wake is not None
        async with httpx.AsyncClient(timeout=self.timeout) as client:

            async def send() -> bool:
                try:
                    return await self._pass(sink, client)
                except Exception:  # a bug or a store outage: say so, try again later
                    log.exception("CDEvents to %s failed; trying again", sink.label)
                    return False

            await wake_loop(send, sink.wake, self.poll_seconds)

    async def _drain_sink(self, sink: _Sink) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while await self._pass(sink, client):
                pass

    # --- one pass: a batch of the log to one sink -----------------------------------------------

    async def _pass(self, sink: _Sink, client: httpx.AsyncClient) -> bool:
        """Send the next batch; True if there may be more right away."""
        batch, full = await asyncio.to_thread(self._read, sink)
        if not batch:
            return False
        for event_id, cloudevent in batch:
            if cloudevent is None:
                continue
            outcome = await self._deliver(sink, client, cloudevent)
            if not outcome.delivered:
                log.warning(
                    "CDEvent %s (%s) not delivered to %s after %d attempt(s): %s",
                    cloudevent["id"],
                    cloudevent["type"],
                    sink.label,
                    outcome.attempts,
                    outcome.error,
                )
            # Shielded: a server stopping right after a delivery still moves the cursor past
            # it, so a restart does not send the event again.
            await asyncio.shield(asyncio.to_thread(self._save, sink, event_id, cloudevent, outcome))
        last = batch[-1][0]
        if sink.tail.position < last:
            await asyncio.shield(asyncio.to_thread(self._save, sink, last, None, None))
        return full

    def _read(self, sink: _Sink) -> tuple[list[tuple[int, dict[str, Any] | None]], bool]:
        """The next batch of the log after the sink's cursor, mapped (None: nothing to send
        for that event), and whether the batch was full."""
        self._load_positions()
        with self.store.session() as session:
            ids = sink.tail.next_ids(session, Event.id, self.batch)
            if not ids:
                return [], False
            rows = session.execute(
                select(Event.id, Event.ts, Event.type, Event.service, Event.run_id,
                       Event.job_id, Event.data)
                .where(Event.id > sink.tail.position, Event.id <= ids[-1],
                       Event.type.in_(MAPPED))
                .order_by(Event.id)
            ).all()  # fmt: skip
            mapped: list[tuple[int, dict[str, Any] | None]] = []
            for row in rows:
                try:
                    mapped.append((row.id, self.mapper.map(session, LogEvent.of(row))))
                except Exception:  # one odd event must not stop the stream
                    log.exception("cannot map event %s (%s) to a CDEvent", row.id, row.type)
                    mapped.append((row.id, None))
        if not mapped or mapped[-1][0] != ids[-1]:
            mapped.append((ids[-1], None))  # the batch's unmapped tail moves the cursor too
        return mapped, len(ids) >= self.batch

    async def _deliver(
        self, sink: _Sink, client: httpx.AsyncClient, cloudevent: dict[str, Any]
    ) -> _Outcome:
        body, headers = cloudevent_request(cloudevent)
        error: str | None = None
        for attempt in range(self.attempts):
            try:
                await post(
                    sink.url, body, headers, what="CDEvents sink", client=client,
                    timeout=self.timeout,
                )  # fmt: skip
            except NotifyError as exc:
                error = exc.message
                if not exc.retry:
                    return _Outcome(False, attempt + 1, error)
            else:
                return _Outcome(True, attempt + 1)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(backoff_delay(attempt, self.backoff, self.max_backoff))
        return _Outcome(False, self.attempts, error)

    # --- cursors ---------------------------------------------------------------------------------

    def _load_positions(self) -> None:
        """Each sink starts where the store says it got to (the start of the log for a sink
        never seen before). Once per sender; retried by the next pass if the store fails."""
        with self._lock:
            if not self._loaded:
                self._read_positions()
                self._loaded = True

    def _read_positions(self) -> None:
        with self.store.session() as session:
            rows = dict(
                session.execute(
                    select(EventCursor.name, EventCursor.last_event_id).where(
                        EventCursor.name.in_([s.key for s in self.sinks])
                    )
                ).all()
            )
        for sink in self.sinks:
            sink.tail.advance(int(rows.get(sink.key, 0)))

    def _save(
        self,
        sink: _Sink,
        position: int,
        cloudevent: dict[str, Any] | None,
        outcome: _Outcome | None,
    ) -> None:
        """Move the sink's cursor to ``position`` (and the overall one to where every sink
        is), recording a give-up in the same transaction. Another server that moved the
        cursor further is followed, never undone."""
        with self.store.write() as w:
            row = _cursor(w, sink.key)
            if row.last_event_id > position:
                position = int(row.last_event_id)  # another sender got further: follow it
            else:
                row.last_event_id, row.updated_at = position, utcnow()
            sink.tail.advance(position)
            overall = _cursor(w, CURSOR)
            everyone = min(s.tail.position for s in self.sinks)
            if overall.last_event_id != everyone:
                overall.last_event_id, overall.updated_at = everyone, utcnow()
            if cloudevent is not None and outcome is not None and not outcome.delivered:
                w.emit(
                    EventType.CDEVENTS_DROPPED,
                    service=cloudevent["data"]["customData"].get("service"),
                    sink=sink.label,
                    cursor=sink.key,
                    event=cloudevent["data"]["customData"].get("eventId"),
                    id=cloudevent["id"],
                    type=cloudevent["type"],
                    attempts=outcome.attempts,
                    error=outcome.error,
                )


def _cursor(w: Writer, name: str) -> EventCursor:
    query = select(EventCursor).where(EventCursor.name == name)
    if w.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = w.session.scalar(query)
    if row is None:
        row = EventCursor(name=name, last_event_id=0, updated_at=utcnow())
        w.session.add(row)
        w.session.flush()
    return row
