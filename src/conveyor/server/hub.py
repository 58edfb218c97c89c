"""Wake-ups inside one server process: the store announces committed events, and the loops
waiting on them (dispatcher, intake, built-in runner, long-polls, log streams) wake at once
instead of at their next poll. Other server processes are caught by those polls."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from conveyor.events import EventType
from conveyor.store.models import Event

# Which channels hear of which events. (The incidents channel also listed incident.detected
# and incident.reported, CDEvents' names of an incident, which Conveyor never records.)
CHANNELS: dict[str, set[EventType]] = {
    "dispatch": {
        EventType.PIPELINERUN_QUEUED,
        EventType.PIPELINERUN_CANCEL_REQUESTED,
        EventType.TASKRUN_FINISHED,
        EventType.TASKRUN_REQUEUED,
    },
    "jobs": {EventType.TASKRUN_QUEUED, EventType.TASKRUN_REQUEUED},
    "intake": {EventType.CHANGE_RECEIVED},
    "logs": {EventType.LOG_APPENDED, EventType.TASKRUN_FINISHED, EventType.PIPELINERUN_FINISHED},
    "delivery": {
        EventType.RELEASE_CREATED,
        EventType.RELEASE_PUBLISHED,
        EventType.RELEASE_PUBLISH_FAILED,
        EventType.DEPLOYMENT_QUEUED,
        EventType.DEPLOYMENT_SUCCEEDED,
        EventType.DEPLOYMENT_FAILED,
        EventType.DEPLOYMENT_ROLLED_BACK,
        EventType.DEPLOYMENT_CANCELLED,
        EventType.APPROVAL_APPROVED,
        EventType.APPROVAL_REJECTED,
        EventType.APPROVAL_EXPIRED,
        EventType.ENVIRONMENT_UNHELD,
    },
    # Every event that may have written notices to the outbox.
    "notify": {
        EventType.APPROVAL_REQUESTED,
        EventType.DEPLOYMENT_DEPLOYING,
        EventType.DEPLOYMENT_SUCCEEDED,
        EventType.DEPLOYMENT_FAILED,
        EventType.DEPLOYMENT_ROLLING_BACK,
        EventType.DEPLOYMENT_ROLLED_BACK,
        EventType.DEPLOYMENT_REJECTED,
        EventType.INCIDENT_OPENED,
        EventType.INCIDENT_RESOLVED,
    },
    "incidents": {
        EventType.INCIDENT_OPENED,
        EventType.INCIDENT_UPDATED,
        EventType.INCIDENT_RESOLVED,
    },
}


class Tap:
    """Every event type announced while a tap is open (for the web UI's stream)."""

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.changed = asyncio.Event()

    def add(self, type_: str) -> None:
        self.types.add(type_)
        self.changed.set()

    def take(self) -> set[str]:
        taken, self.types = self.types, set()
        self.changed.clear()
        return taken


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._waiters: dict[str, set[asyncio.Event]] = {name: set() for name in CHANNELS}
        self._taps: set[Tap] = set()

    def _set(self, event: asyncio.Event) -> None:
        if threading.get_ident() == self._loop_thread:
            event.set()
        else:
            self.loop.call_soon_threadsafe(event.set)

    def announce(self, ev: Event) -> None:
        for channel, kinds in CHANNELS.items():
            if ev.type in kinds:
                self.notify(channel)
        for tap in list(self._taps):
            if threading.get_ident() == self._loop_thread:
                tap.add(ev.type)
            else:
                self.loop.call_soon_threadsafe(tap.add, ev.type)

    @contextlib.contextmanager
    def tapping(self) -> Iterator[Tap]:
        """A tap that collects the type of every event announced, for as long as the block runs."""
        tap = Tap()
        self._taps.add(tap)
        try:
            yield tap
        finally:
            self._taps.discard(tap)

    def notify(self, channel: str) -> None:
        for waiter in list(self._waiters[channel]):
            self._set(waiter)

    @contextlib.contextmanager
    def listening(self, channel: str) -> Iterator[asyncio.Event]:
        """An event set whenever the channel is notified, for as long as the block runs."""
        waiter = asyncio.Event()
        self._waiters[channel].add(waiter)
        try:
            yield waiter
        finally:
            self._waiters[channel].discard(waiter)
