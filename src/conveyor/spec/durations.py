"""Durations (`30s`, `1h30m`) and sizes (`64MiB`) as people write them in a pipeline file."""

import math
import re

from conveyor.spec.problems import describe

# Largest unit first: a duration lists its parts in this order, each at most once.
_DURATION_UNITS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|d|h|m|s)")

#: For the JSON Schema: the same shapes the parser accepts (order of units is not expressible).
DURATION_PATTERN = r"^\s*((\d+(\.\d*)?|\.\d+)\s*(ms|d|h|m|s)\s*)+$"
DURATION_HELP = "use a number with a unit, e.g. 30s, 10m, 2h"

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
SIZE_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*([kKmMgG][iI]?[bB]|[bB])?\s*$"
SIZE_HELP = "use a number of bytes or a number with a unit, e.g. 512KiB, 64MiB, 1GB"


class DurationError(ValueError):
    """A value that is not a usable duration or size; the message is meant for the user."""


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as `500ms`, `10m`, `1h30m`, `2d`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"expected a duration such as 30s, 10m or 2h, got {describe(value)}")
    if isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise DurationError(f"invalid duration {describe(value)}: {DURATION_HELP}")
    if seconds <= 0:
        raise DurationError(f"duration must be greater than 0, got {describe(value)}")
    return seconds


def _parse_duration_text(text: str) -> float:
    invalid = DurationError(f"invalid duration {describe(text)}: {DURATION_HELP}")
    pos, total, last_rank = 0, 0.0, -1
    ranks = list(_DURATION_UNITS)
    while pos < len(text.rstrip()):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise invalid
        number, unit = match.groups()
        rank = ranks.index(unit)
        if rank <= last_rank:  # `30s1m` or `1m1m`: almost certainly a slip
            raise invalid
        last_rank = rank
        total += float(number) * _DURATION_UNITS[unit]
        pos = match.end()
    if last_rank < 0:
        raise invalid
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 86400 -> `24h`, 90 -> `1m30s`, 0.5 -> `500ms`."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{seconds:g}s" if millis >= 60_000 else f"{millis}ms"
    rest = millis // 1000
    parts: list[str] = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as `64MiB`, `512KiB`, `1GB`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"expected a size such as 64MiB, got {describe(value)}")
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = match.group(2).lower() if match else ""
        if match is None or (unit and unit not in _SIZE_UNITS):
            raise DurationError(f"invalid size {describe(value)}: {SIZE_HELP}")
        size = float(match.group(1)) * _SIZE_UNITS.get(unit, 1)
    else:
        size = float(value)
    if not math.isfinite(size) or size < 1:
        raise DurationError(f"size must be at least 1 byte, got {describe(value)}")
    return int(size)


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
