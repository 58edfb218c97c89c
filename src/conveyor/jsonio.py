"""JSON as Conveyor writes it everywhere (CLI --json, API, event streams): times in RFC 3339 UTC;
and JSON as it reads it from outside (webhooks, Alertmanager, imports, Slack), depth-limited."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

# No payload Conveyor reads nests anywhere near this (a forge push is about 5 deep). A cap far
# below the interpreter's recursion limit keeps whatever walks the value later (pydantic,
# json.dumps into the store) from running out of stack on input that parsed.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON nests deeper than allowed: bad input, never a server error."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the JSON is nested more than {limit} levels deep")
        self.limit = limit


def default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, default=default)


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, **kw: Any) -> Any:
    """``json.loads`` for input from outside: `TooDeep` (a ValueError) instead of a
    RecursionError, and for anything nested deeper than ``max_depth``. Other errors are
    json.loads' own (JSONDecodeError, UnicodeDecodeError: both ValueErrors)."""
    try:
        value = json.loads(data, **kw)
    except RecursionError:
        raise TooDeep(max_depth) from None
    # Counting brackets is a C-speed upper bound on the depth: most payloads need no walk.
    brackets = (
        data.count("[") + data.count("{")
        if isinstance(data, str)
        else data.count(b"[") + data.count(b"{")
    )
    if brackets > max_depth and _deeper_than(value, max_depth):
        raise TooDeep(max_depth)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative: a recursive walk would fail on exactly the input it is meant to refuse.
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
