"""Field types of the targets' options models (conveyor.targets.base.read_options).

Each type is a pydantic annotation: a before-validator that refuses what the target cannot use
with a message naming what is expected (as `PydanticCustomError` with the text in ``detail``,
shown unchanged by the pipeline loader and by `read_options`), and constraints that describe the
same rule in the JSON Schema. Durations are the pipeline's own (`conveyor.spec.fields.Duration`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo

from conveyor.spec.durations import DurationError, parse_duration
from conveyor.spec.fields import duration_schema, user_error
from conveyor.spec.problems import describe

__all__ = ["Command", "DurationOrZero", "Flag", "Port", "Seconds", "Strings", "Text"]


def _port(value: object) -> object:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535
    ):
        raise user_error("port", f"must be a port number from 1 to 65535, got {describe(value)}")
    return value


def _duration_or_zero(value: object) -> float:
    if not isinstance(value, bool) and value in (0, "0"):
        return 0.0
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise user_error("duration", str(exc), "or 0, not to wait at all") from None


def _seconds(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise user_error("seconds", f"must be a positive number of seconds, got {describe(value)}")
    return value


def _flag(value: object) -> object:
    if not isinstance(value, bool):
        raise user_error("flag", f"must be true or false, got {describe(value)}")
    return value


def _strings(value: object, info: ValidationInfo) -> object:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise user_error(
            "strings",
            f"must be a list of strings, got {describe(value)}",
            f'write it as a YAML list, e.g. {info.field_name}: ["--memory", "256m"]',
        )
    return tuple(value)


def _text(what: str) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise user_error("empty", f"must be a non-empty {what}, got {describe(value)}")
        return value

    return BeforeValidator(check)


#: A TCP port on 127.0.0.1, or None (not set).
Port = Annotated[Annotated[int, Field(ge=1, le=65535)] | None, BeforeValidator(_port)]
#: A pipeline duration (``30s``, ``2m``, a number of seconds) or 0.
DurationOrZero = Annotated[
    float,
    BeforeValidator(_duration_or_zero),
    duration_schema({"minimum": 0}, "; 0 for none.", also=({"const": "0"},)),
]
#: A positive number of seconds (not a duration string).
Seconds = Annotated[float, Field(gt=0), BeforeValidator(_seconds)]
#: Text that is not blank.
Text = Annotated[str, Field(pattern=r"\S"), _text("string")]
#: A shell command (run with bash) that is not blank.
Command = Annotated[str, Field(pattern=r"\S"), _text("command")]
#: true or false, nothing that merely looks like one.
Flag = Annotated[bool, BeforeValidator(_flag)]
#: A list of strings, each taken as written (numbers are refused, not converted).
Strings = Annotated[tuple[str, ...], BeforeValidator(_strings)]
