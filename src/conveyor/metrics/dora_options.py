"""What a DORA report covers and how: the window (calendar days in a time zone, with a week
start) and the settings; parsing both from `conveyor dora`'s options or GET /api/v1/dora's
query; and how times and durations are written in reports."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.errors import ConveyorError
from conveyor.metrics import tiers as tier_tables

# The dates reports can cover (with a trend window as long again before, and margins).
EARLIEST = dt.date(1970, 1, 1)
LATEST = dt.date(2200, 1, 1)
MAX_DURATION = dt.timedelta(days=(LATEST - EARLIEST).days)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ONE_DAY = dt.timedelta(days=1)
LeadFrom = Literal["committed", "authored", "seen"]
By = Literal["day", "week", "month"]


@dataclass(frozen=True)
class Window:
    """[start, end) as local dates in ``tz`` (an IANA name); weeks start on ``week_start``."""

    start: dt.date
    end: dt.date
    tz: str = "UTC"
    week_start: str = "monday"
    # Why the window is not what was asked for (the default cut to the service's history).
    note: str = ""

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConveyorError(f"the window {self.start} → {self.end} is empty")
        if self.week_start not in WEEKDAYS:
            raise ConveyorError(f"--week-start must be a day name, not {self.week_start!r}")
        self.zone  # noqa: B018 (an unknown zone is an error now)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.tz)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> Window:
        return replace(self, start=self.start - (self.end - self.start), end=self.start, note="")

    def instant(self, day: dt.date) -> float:
        """Local midnight starting ``day``, as epoch seconds."""
        return dt.datetime.combine(day, dt.time(), tzinfo=self.zone).timestamp()

    def buckets(self, by: By) -> list[tuple[dt.date, dt.date]]:
        """Days, weeks or calendar months covering the window, the first and last cut to it."""
        out, day, ws = [], self.start, WEEKDAYS.index(self.week_start)
        while day < self.end:
            if by == "day":
                nxt = day + dt.timedelta(days=1)
            elif by == "week":
                nxt = day + dt.timedelta(days=(ws - day.weekday()) % 7 or 7)
            else:
                nxt = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
            out.append((day, min(nxt, self.end)))
            day = out[-1][1]
        return out

    def to_json(self) -> dict[str, Any]:
        return ({"note": self.note} if self.note else {}) | {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "days": self.days,
            "time_zone": self.tz,
            "week_start": self.week_start,
            "start": iso(self.instant(self.start)),
            "end": iso(self.instant(self.end)),
        }


@dataclass(frozen=True)
class Settings:
    """What to measure and how. ``service``: one service (None: every one); ``services``: a
    group of them (a team's; None: no group); ``look_back``: how old a first deployment's
    commits may be and still count for lead time; ``attribution_window``: how long after a
    deployment finished an incident is still blamed on it."""

    service: str | None = None
    services: frozenset[str] | None = None
    tier: str = "production"
    by: By = "week"
    lead_time_from: LeadFrom = "committed"
    look_back: dt.timedelta = dt.timedelta(days=30)
    attribution_window: dt.timedelta = dt.timedelta(hours=48)
    tiers: str = "2023"
    explain: bool = False
    compare: bool = True
    # The window is the default one (no --since, no --from): start it no earlier than the
    # first deployment in scope, so a young service is not rated over days it did not exist.
    fit_history: bool = False

    def __post_init__(self) -> None:
        if self.by not in ("day", "week", "month"):
            raise ConveyorError(f"--by must be day, week or month, not {self.by!r}")
        if self.lead_time_from not in ("committed", "authored", "seen"):
            raise ConveyorError(
                f"lead time starts when committed, authored or seen, not {self.lead_time_from!r}"
            )
        if self.look_back < dt.timedelta(0) or self.attribution_window < dt.timedelta(0):
            raise ConveyorError("the look-back and the attribution window cannot be negative")
        tier_tables.load(self.tiers)  # an unknown table fails now, not after reading the store

    def covers(self, service: str) -> bool:
        """Whether ``service``'s facts are measured: the one asked for, one of the group, or
        any when neither is given."""
        if self.service and service != self.service:
            return False
        return self.services is None or service in self.services


Commit = tuple[int, float, str]  # (deployment row id, lead-time start, sha)


def from_params(params: Mapping[str, Any]) -> tuple[Window, Settings]:
    """The window and settings of `conveyor dora`'s options (and GET /api/v1/dora's query)."""
    window = window_for(
        params.get("since"),
        params.get("from"),
        params.get("to"),
        params.get("tz") or "UTC",
        params.get("week_start") or "monday",
    )
    settings = Settings(
        service=params.get("service") or None,
        tier=params.get("env_tier") or "production",
        by=params.get("by") or "week",
        lead_time_from=params.get("lead_time_from") or "committed",
        look_back=parse_duration(params.get("look_back") or "30d", "d"),
        attribution_window=parse_duration(params.get("attribution_window") or "48h", "h"),
        tiers=str(params.get("tiers") or "2023"),
        explain=bool(params.get("explain")),
        fit_history=not params.get("since") and not params.get("from"),
    )
    return window, settings


def window_for(
    since: str | None = None,
    start: str | None = None,
    end: str | None = None,
    tz: str = "UTC",
    week_start: str = "monday",
    today: dt.date | None = None,
) -> Window:
    """The window of `--since 90d` (today included) or `--from D --to D` (``to`` excluded),
    as the CLI and the API take them. `--since` with `--to` ends the span at ``to``."""
    if since and start:
        raise ConveyorError("give --since or --from, not both")
    zone = _zone(tz)
    upper = _date(end, "--to") if end else (today or dt.datetime.now(zone).date()) + ONE_DAY
    if start:
        window = Window(_date(start, "--from"), upper, tz, week_start)
    else:
        length = parse_duration(since or "90d")
        if length.seconds or length.microseconds or length.days < 1:
            raise ConveyorError(f"--since takes whole days or weeks (90d, 12w), not {since!r}")
        if length.days > (LATEST - EARLIEST).days:
            raise ConveyorError(f"--since {since} reaches before {EARLIEST}")
        window = Window(upper - dt.timedelta(days=length.days), upper, tz, week_start)
    if window.start < EARLIEST or window.end > LATEST:
        raise ConveyorError(
            f"the window {window.start} → {window.end} is out of range",
            hint=f"reports cover {EARLIEST} to {LATEST}",
        )
    return window


def parse_duration(text: str, unit: str = "d") -> dt.timedelta:
    """90d, 12w, 48h, 30m, 10s; a bare number is in ``unit``."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not found:
        raise ConveyorError(f"{text!r} is not a duration", hint="e.g. 90d, 12w, 48h, 30m")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[found.group(2) or unit]
    total = float(found.group(1)) * seconds
    if total > MAX_DURATION.total_seconds():
        raise ConveyorError(f"{text!r} is longer than any report", hint="e.g. 90d, 12w, 48h")
    return dt.timedelta(seconds=total)


def _date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConveyorError(f"{option} takes a date such as 2024-03-01, not {text!r}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConveyorError(
            f"unknown time zone {name!r}", hint="use an IANA name such as Europe/Paris or UTC"
        ) from None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def fmt_duration(seconds: float) -> str:
    """3d 4h, 5h 12m, 47m, 30s: two units at most."""
    s = round(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= size:
            rest = (s % size) // subsize
            return f"{s // size}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{s // 60}m" if s >= 60 else f"{s}s"
