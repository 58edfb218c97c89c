"""JSON as Conveyor writes it everywhere (CLI --json, API, event streams): times in RFC 3339 UTC."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, default=default)
