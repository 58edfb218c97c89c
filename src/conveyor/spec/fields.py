"""Field types of the pipeline models: how each kind of value is read, checked and described.

Messages for the user are raised as `PydanticCustomError` with the text in the `detail` context
(and an optional `hint`), so the loader can show them unchanged next to the file position.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from conveyor.events import DEFAULT_NOTICE_EVENTS, NoticeEvent
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

# The names `notify: on:` accepts (conveyor.events.NoticeEvent), in the documented order.
NOTIFY_EVENTS: tuple[str, ...] = tuple(e.value for e in NoticeEvent)
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


@dataclass(frozen=True)
class _Matching(GroupedMetadata):
    """A name that must match ``pattern``: refused naming ``what`` and the ``rule`` it breaks,
    and described by the pattern in the JSON Schema."""

    pattern: str
    what: str
    rule: str

    def __iter__(self) -> Iterator[object]:
        compiled = re.compile(self.pattern)

        def check(value: str) -> str:
            if not compiled.match(value):
                raise user_error(
                    "invalid_name", f"{self.what} {describe(value)} is not valid: {self.rule}"
                )
            return value

        yield AfterValidator(check)
        yield WithJsonSchema({"type": "string", "pattern": self.pattern})


_NAME_RULE = "use letters, digits, '_', '.' and '-', not starting with '.' or '-'"


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


# `${{ secrets.NAME }}` and the like: resolved later, so whatever they stand for is checked then.
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
# Browsers drop tab, CR and LF inside a URL ("java\tscript:" is "javascript:"); no URL of a
# pipeline file needs whitespace or control characters.
_URL_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# git's own "user@host:path" for SSH.
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:(?!//)")


def _url_check(schemes: tuple[str, ...], hint: str) -> Callable[[str], str]:
    allowed = ", ".join(f"{s}://" for s in schemes[:-1]) + f" or {schemes[-1]}://"

    def check(value: str) -> str:
        if value.lstrip().startswith("${{"):
            return value  # the whole URL comes from a secret, checked where it is used
        literal = _EXPRESSION.sub("x", value)
        try:
            parts = urlsplit(literal)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme.lower() not in schemes or not parts.netloc or _URL_UNSAFE.search(literal):
            raise user_error("url_scheme", f"must be an {allowed} URL, got {describe(value)}", hint)
        return value

    return check


def _git_url(value: str) -> str:
    literal = _EXPRESSION.sub("x", value)
    if not _URL_UNSAFE.search(literal) and (_SCP_LIKE.match(literal) or literal.startswith("/")):
        return value
    return _url_check(
        ("https", "http", "ssh", "git"), "or user@host:path, or an absolute path on the server"
    )(value)


def number_or_text(
    number: dict[str, object],
    pattern: str,
    description: str | None = None,
    *,
    also: tuple[dict[str, object], ...] = (),
) -> WithJsonSchema:
    """The JSON Schema of a value written as a number (``number``'s schema) or as text matching
    ``pattern`` (``30s``, ``10MB``), or as one of ``also``."""
    schema: dict[str, object] = {"anyOf": [number, {"type": "string", "pattern": pattern}, *also]}
    if description is not None:
        schema["description"] = description
    return WithJsonSchema(schema)


_STRINGY = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


def duration_schema(
    bound: dict[str, object], more: str, *, also: tuple[dict[str, object], ...] = ()
) -> WithJsonSchema:
    """The JSON Schema of a pipeline duration: seconds within ``bound`` (a JSON Schema minimum),
    or text such as ``30s``; ``more`` ends the description."""
    return number_or_text(
        {"type": "number", **bound},
        DURATION_PATTERN,
        f"A duration: seconds, or {DURATION_HELP}{more}",
        also=also,
    )


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    duration_schema({"exclusiveMinimum": 0}, " (also 500ms, 1h30m, 2d)."),
]
Size = Annotated[
    int, BeforeValidator(_size), number_or_text({"type": "integer", "minimum": 1}, SIZE_PATTERN)
]
StrList = Annotated[
    list[str],
    BeforeValidator(one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


def at_least_one(kind: str, message: str) -> AfterValidator:
    """For a list that must name something (recipients, approvers): ``message`` if it is empty."""

    def check(value: list[str]) -> list[str]:
        if not value:
            raise user_error(kind, message)
        return value

    return AfterValidator(check)


EnvVarName = Annotated[
    str, _Matching(ENV_VAR_PATTERN, "environment variable name", "use letters, digits and '_'")
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
JobName = Annotated[str, _Matching(NAME_PATTERN, "job name", _NAME_RULE)]
EnvironmentName = Annotated[str, _Matching(NAME_PATTERN, "environment name", _NAME_RULE)]
ServiceName = Annotated[
    str,
    _Matching(
        SERVICE_PATTERN,
        "service name",
        "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
]
TargetName = Annotated[
    str, _Matching(TARGET_PATTERN, "target", "use lowercase letters, digits, '_' and '-'")
]
NotifyEvent = Annotated[
    str,
    AfterValidator(_notify_event),
    WithJsonSchema({"type": "string", "enum": list(NOTIFY_EVENTS)}),
]
HttpUrl = Annotated[
    str,
    AfterValidator(
        _url_check(("http", "https"), "links and probes use only http(s); no javascript: or data:")
    ),
    WithJsonSchema({"type": "string", "pattern": r"^(https?://|\s*\$\{\{)"}),
]
SmtpUrl = Annotated[
    str,
    AfterValidator(_url_check(("smtp", "smtps"), "smtp://[user:pass@]host[:port] or smtps://...")),
    WithJsonSchema({"type": "string", "pattern": r"^(smtps?://|\s*\$\{\{)"}),
]
GitUrl = Annotated[str, AfterValidator(_git_url), WithJsonSchema({"type": "string"})]
Condition = Literal["success", "failure", "always"]
Shell = Literal["bash", "sh"]
Tier = Literal["development", "staging", "production"]
Retries = Annotated[int, Field(ge=0, le=10)]

DEFAULT_NOTIFY_EVENTS = [e.value for e in DEFAULT_NOTICE_EVENTS]
