"""The in-memory counters and histograms of /metrics (metrics.exposition): their series keyed
by label values, the flow of runs or jobs through queue, start and end, and the recovery of
failed deployments."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["Family", "Flow", "Histogram", "Recovery", "seconds_between"]


def seconds_between(later: dt.datetime, earlier: dt.datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value
        if index < len(self.bounds):
            self.counts[index] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        counts = self.counts or [0] * len(self.bounds)
        for bound, n in zip(self.bounds, counts, strict=True):
            running += n
            out.append((_bound(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


def _bound(value: float) -> str:
    return repr(float(value))


@dataclass
class Family:
    """One counter or histogram family, its series keyed by label values.

    ``increase()`` in Prometheus takes a series' first sample as its starting point: a series
    that first appears at 1 hides that first event. So the series Conveyor can foresee (each
    known service and environment, see ``_History.know``) are exported at 0 before anything
    happens, and a series first seen after the history was read (``live``) is exported at 0
    once, its value from the next collection on. Series read with the history are exported
    with their totals at once: they happened before this server, as far as Prometheus knows.
    """

    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None
    series: dict[tuple[str, ...], Any] = field(default_factory=dict)
    shown: set[tuple[str, ...]] = field(default_factory=set)
    live: bool = False

    def _zero(self) -> Any:
        return 0.0 if self.buckets is None else Histogram(self.buckets)

    def ensure(self, key: tuple[str, ...]) -> None:
        """Export ``key`` (at 0 until something happens) from now on."""
        if key not in self.series:
            self.series[key] = self._zero()

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.series[key] = self.series.get(key, 0.0) + amount

    def observe(self, key: tuple[str, ...], value: float) -> None:
        assert self.buckets is not None
        hist = self.series.get(key)
        if hist is None:
            hist = self.series[key] = Histogram(self.buckets)
        hist.observe(value)

    def _values(self) -> Iterator[tuple[list[str], Any]]:
        zero = self._zero()
        for key in sorted(self.series):
            first = self.live and key not in self.shown
            self.shown.add(key)
            yield list(key), zero if first else self.series[key]
        self.live = True

    def metric(self) -> Metric:
        if self.buckets is None:
            counter = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
            for labels, value in self._values():
                counter.add_metric(labels, value)
            return counter
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, hist in self._values():
            histogram.add_metric(labels, hist.buckets(), hist.total)
        return histogram


@dataclass
class Flow:
    """Runs or jobs, which are queued, start and finish alike: how long they waited in the
    queue, how many ended and how long they took. ``queued`` holds when each one in flight was
    queued, to measure its wait when it starts."""

    queue: Family
    finished: Family
    duration: Family
    # The types of the events it follows: one queued, started, finished.
    events: tuple[str, str, str]
    queued: dict[int, dt.datetime] = field(default_factory=dict)

    def ensure(self, service: str, statuses: Iterable[str]) -> None:
        """The series of ``service`` at 0: its waits, its durations and each way one ends."""
        self.queue.ensure((service,))
        self.duration.ensure((service,))
        for status in sorted(statuses):
            self.finished.ensure((service, status))

    def follow(
        self, kind: str, key: int | None, at: dt.datetime, service: str, data: dict[str, Any]
    ) -> bool:
        """Follow an event of type ``kind`` about ``key`` if it is one of this flow's; True if
        it was."""
        queued, started, finished = self.events
        if kind == queued:
            self.on_queued(key, at)
        elif kind == started:
            self.on_started(key, at, service)
        elif kind == finished:
            self.on_finished(key, service, data)
        else:
            return False
        return True

    def on_queued(self, key: int | None, at: dt.datetime) -> None:
        if key is not None:
            self.queued[key] = at

    def on_started(self, key: int | None, at: dt.datetime, service: str) -> None:
        queued = self.queued.pop(key, None) if key is not None else None
        if queued is not None:
            self.queue.observe((service,), seconds_between(at, queued))

    def on_finished(self, key: int | None, service: str, data: dict[str, Any]) -> None:
        if key is not None:
            self.queued.pop(key, None)
        status = str(data.get("status", ""))
        self.finished.inc((service, status))
        if isinstance(data.get("duration"), int | float):
            self.duration.observe((service,), float(data["duration"]))


# How many healthy deployments of an environment are remembered to restore a failure read
# after them (a rolled-back deployment's fact is written after its rollback's).
HEALTHY_KEPT = 20


@dataclass
class Recovery:
    """Failed deployment recovery time, per (service, environment, tier): from a failure's
    detection to the end of the first healthy deployment (a rollback or a new release) of its
    environment that finished after it. The facts come in the order they were written, not
    the order things happened, so both sides wait for each other: the last healthy ends of each
    environment, and the failures not restored yet."""

    family: Family
    healthy: dict[tuple[str, ...], list[dt.datetime]] = field(default_factory=dict)
    broken: dict[tuple[str, ...], list[dt.datetime]] = field(default_factory=dict)

    def on_healthy(self, key: tuple[str, ...], finished: dt.datetime) -> None:
        ends = self.healthy.setdefault(key, [])
        bisect.insort(ends, finished)
        del ends[:-HEALTHY_KEPT]
        waiting = self.broken.get(key, [])
        for detected in [d for d in waiting if d < finished]:
            self.family.observe(key, seconds_between(finished, detected))
        if waiting:
            self.broken[key] = [d for d in waiting if d >= finished]

    def on_failed(self, key: tuple[str, ...], detected: dt.datetime) -> None:
        ends = self.healthy.get(key, [])
        i = bisect.bisect_right(ends, detected)
        if i < len(ends):
            self.family.observe(key, seconds_between(ends[i], detected))
        else:
            self.broken.setdefault(key, []).append(detected)
