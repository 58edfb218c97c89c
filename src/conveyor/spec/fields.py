"""Field types of the pipeline models: how each kind of value is read, checked and described.

Messages for the user are raised as `PydanticCustomError` with the text in the `detail` context
(and an optional `hint`), so the loader can show them unchanged next to the file position.
"""

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from conveyor.spec.durations import (
    DURATION_HELP,
    DURATION_PATTERN,
    SIZE_PATTERN,
    DurationError,
    parse_duration,
    parse_size,
)
from conveyor.spec.problems import describe, suggest

#: Validation context key: the loader runs the graph checks itself, with positions.
SKIP_GRAPH_CHECKS = "conveyor.spec.skip_graph_checks"
#: Top-level keys starting with this are ignored: a place for YAML anchors (`x-base: &base`).
EXTENSION_PREFIX = "x-"

NOTIFY_EVENTS: tuple[str, ...] = (
    "approval.requested",
    "deployment.started",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolledback",
    "incident.opened",
    "incident.resolved",
    "run.failed",
    "run.succeeded",
)
TIERS: tuple[str, ...] = ("development", "staging", "production")

SERVICE_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
TARGET_PATTERN = r"^[a-z][a-z0-9_-]*$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def user_error(kind: str, message: str, hint: str | None = None) -> PydanticCustomError:
    context: dict[str, str] = {"detail": message}
    if hint is not None:
        context["hint"] = hint
    return PydanticCustomError(kind, "{detail}", context)


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise user_error("duration", str(exc)) from None


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except DurationError as exc:
        raise user_error("size", str(exc)) from None


def one_or_many(value: object) -> object:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise user_error(
        "str_or_list", f"expected a string or a list of strings, got {describe(value)}"
    )


def _env_values(value: object) -> object:
    # Numbers and booleans are what people mean as text here (`PORT: 8080`, `DEBUG: true`).
    if value is None:
        return {}
    if isinstance(value, dict):
        return {
            k: ("true" if v else "false")
            if isinstance(v, bool)
            else str(v)
            if isinstance(v, int | float)
            else v
            for k, v in value.items()
        }
    return value


def _command(value: str) -> str:
    if not value.strip():
        raise user_error("empty_run", "empty run: give the command(s) to execute")
    return value


def _pattern_check(pattern: str, what: str, rule: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise user_error("invalid_name", f"{what} {describe(value)} is not valid: {rule}")
        return value

    return check


def _notify_event(value: str) -> str:
    if value not in NOTIFY_EVENTS:
        raise user_error(
            "unknown_event",
            f"unknown event {describe(value)}",
            suggest(value, NOTIFY_EVENTS, "events"),
        )
    return value


def check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise user_error("invalid_regex", f"invalid regular expression: {exc}") from None
    return value


_STRINGY = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}

Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": f"A duration: seconds, or {DURATION_HELP} (also 500ms, 1h30m, 2d).",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }
    ),
]
StrList = Annotated[
    list[str],
    BeforeValidator(one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]
EnvVarName = Annotated[
    str,
    AfterValidator(
        _pattern_check(ENV_VAR_PATTERN, "environment variable name", "use letters, digits and '_'")
    ),
    WithJsonSchema({"type": "string", "pattern": ENV_VAR_PATTERN}),
]
Env = Annotated[
    dict[EnvVarName, str],
    BeforeValidator(_env_values),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": ENV_VAR_PATTERN},
            "additionalProperties": _STRINGY,
        }
    ),
]
Command = Annotated[
    str, AfterValidator(_command), WithJsonSchema({"type": "string", "pattern": r"\S"})
]
JobName = Annotated[
    str,
    AfterValidator(
        _pattern_check(
            NAME_PATTERN,
            "job name",
            "use letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    ),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
EnvironmentName = Annotated[
    str,
    AfterValidator(
        _pattern_check(
            NAME_PATTERN,
            "environment name",
            "use letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    ),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
ServiceName = Annotated[
    str,
    AfterValidator(
        _pattern_check(
            SERVICE_PATTERN,
            "service name",
            "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    ),
    WithJsonSchema({"type": "string", "pattern": SERVICE_PATTERN}),
]
TargetName = Annotated[
    str,
    AfterValidator(
        _pattern_check(TARGET_PATTERN, "target", "use lowercase letters, digits, '_' and '-'")
    ),
    WithJsonSchema({"type": "string", "pattern": TARGET_PATTERN}),
]
NotifyEvent = Annotated[
    str,
    AfterValidator(_notify_event),
    WithJsonSchema({"type": "string", "enum": list(NOTIFY_EVENTS)}),
]
Condition = Literal["success", "failure", "always"]
Shell = Literal["bash", "sh"]
Tier = Literal["development", "staging", "production"]
Retries = Annotated[int, Field(ge=0, le=10)]

DEFAULT_NOTIFY_EVENTS = [
    "approval.requested",
    "deployment.failed",
    "deployment.rolledback",
    "run.failed",
]
