"""What a history file's lines hold once checked: the values, the native records
(``"kind": "deployment"`` and ``"incident"``) and the records every line becomes, CDEvents
included (metrics.import_cdevents maps those onto the native rules).

Errors are "line N: field: what" strings, the field named as the file writes it (for a
CDEvent, the event's own field), so that a person can find and fix each bad line; parsing
collects them (up to MAX_ERRORS) rather than stopping at the first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from conveyor.errors import ConveyorError
from conveyor.facts import Change, DeploymentKind, DeploymentResult
from conveyor.spec.fields import NAME_PATTERN, SERVICE_PATTERN, TIERS

# Errors shown at most (the first ones, in line order); parsing stops there.
MAX_ERRORS = 20
KEY_MAX = 300

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_SERVICE = re.compile(SERVICE_PATTERN)
_ENVIRONMENT = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

M = TypeVar("M", bound=BaseModel)


class ImportFailed(ConveyorError):
    """The file (or body) cannot be imported; ``errors`` are "line N: field: what" strings."""

    def __init__(self, errors: Sequence[str], *, hint: str | None = None) -> None:
        self.errors = list(errors)
        super().__init__(
            "\n".join(self.errors),
            hint=hint
            or "nothing from this file was imported; fix the lines named and import it again",
        )


# --- values -----------------------------------------------------------------------------------


def parse_time(value: object) -> dt.datetime:
    """An RFC 3339 date-time with a time zone, as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError(
            f"expected an RFC 3339 time as a string (e.g. 2024-05-01T10:00:00Z), got {show(value)}"
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        if _DATE.fullmatch(value):
            raise ValueError(f"{value!r} is a date, not a time: write e.g. {value}T00:00:00Z")
        raise ValueError(f"{value!r} is not an RFC 3339 time (e.g. 2024-05-01T10:00:00Z)")
    if match.group("zone") is None:
        raise ValueError(
            f"{value!r} has no time zone: add Z for UTC or an offset such as +02:00 "
            "(naive times are refused, they would be read in an unknown zone)"
        )
    try:
        parsed = dt.datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(f"{value!r} is not a valid time") from None
    return parsed.astimezone(dt.UTC)


def show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sha(value: object) -> str:
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise ValueError(f"{show(value)} is not a commit id (7 to 64 hexadecimal digits)")
    return value.lower()


def _string(value: object, fits: Callable[[str], object], expected: str) -> str:
    """``value`` if it is a string of at most 200 characters that ``fits``, else the ValueError
    saying what was expected."""
    if not isinstance(value, str) or len(value) > 200 or not fits(value):
        raise ValueError(f"{show(value)} is not {expected}")
    return value


def service_name(value: object) -> str:
    return _string(
        value,
        _SERVICE.fullmatch,
        "a service name: use lowercase letters, digits, '.', '_' and '-', starting with a letter "
        "or digit (at most 200)",
    )


def environment_name(value: object) -> str:
    return _string(
        value,
        _ENVIRONMENT.fullmatch,
        "an environment name: use letters, digits, '_', '.' and '-', not starting with '.' or "
        "'-' (at most 200)",
    )


def record_id(value: object) -> str:
    return _string(
        value,
        lambda text: text and not _CONTROL.search(text),
        "an id: a non-empty string of at most 200 characters, without control characters",
    )


def _fixes(value: object) -> bool:
    """true/false, or the id of the incident the deployment fixed (which means true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        return True
    raise ValueError(f"expected true, false or an incident id, got {show(value)}")


def _title(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {show(value)}")
    return value[:2000]


Time = Annotated[dt.datetime, PlainValidator(parse_time)]
Sha = Annotated[str, PlainValidator(_sha)]
ServiceName = Annotated[str, PlainValidator(service_name)]
EnvironmentName = Annotated[str, PlainValidator(environment_name)]
RecordId = Annotated[str, PlainValidator(record_id)]
Fixes = Annotated[bool, PlainValidator(_fixes)]
Title = Annotated[str, PlainValidator(_title)]


def default_tier(environment: str) -> str:
    """production for "production"/"prod", the name if it is a tier, else staging."""
    name = environment.lower()
    if name in ("production", "prod"):
        return "production"
    return name if name in TIERS else "staging"


# --- the native records -----------------------------------------------------------------------


class _NativeIn(BaseModel):
    """Part of a native line: a field it does not know is an error (a typo would otherwise
    drop what it meant to say)."""

    model_config = ConfigDict(extra="forbid")


class CommitIn(_NativeIn):
    sha: Sha
    committed_at: Time
    authored_at: Time | None = None


class DeploymentIn(_NativeIn):
    kind: Literal["deployment"]
    service: ServiceName
    environment: EnvironmentName
    id: RecordId
    # Required on native lines (checked after validation); a CDEvent may not name one.
    commit: Sha | None = None
    started_at: Time
    finished_at: Time
    status: Literal["succeeded", "failed", "rolled_back"]
    commits: list[CommitIn] | None = None
    repository: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    tier: Literal["development", "staging", "production"] | None = None
    kind_of: Literal["deploy", "rollback"] | None = None
    rollback_of: RecordId | None = None
    failed_at: Time | None = None
    fixes_incident: Fixes = False
    # Whether it took users' traffic (absent: it did, from started_at unless served_at says
    # when). false: stopped by its checks before the switch, so no change failure.
    served: bool = True
    served_at: Time | None = None


class IncidentIn(_NativeIn):
    kind: Literal["incident"]
    service: ServiceName
    id: RecordId
    opened_at: Time
    resolved_at: Time | None = None
    deployment: RecordId | None = None
    environment: EnvironmentName | None = None
    title: Title | None = None


# --- what a file holds, once parsed -----------------------------------------------------------


@dataclass
class Where:
    """Maps a record's field to where it is on its line (for CDEvents: the event's field)."""

    line: int
    paths: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    def __call__(self, name: str) -> str:
        head, _, rest = name.partition(".")
        mapped = self.paths.get(head)
        if mapped is None:
            return self.prefix + name
        return mapped + ("." + rest if rest else "")

    def error(self, name: str | None, message: str) -> str:
        return f"line {self.line}: {self(name) + ': ' if name else ''}{message}"


@dataclass
class _Line:
    """What a record of the file knows of where it came from."""

    where: Where

    @property
    def line(self) -> int:
        return self.where.line


@dataclass
class DeploymentRecord(_Line):
    service: str
    environment: str
    id: str
    tier: str
    kind: DeploymentKind
    result: DeploymentResult
    sha: str
    started_at: dt.datetime
    finished_at: dt.datetime
    failed_at: dt.datetime | None
    rollback_of: str | None  # a fact key once resolved
    fixes_incident: bool
    commits: list[Change] | None
    repository: str | None
    served_at: dt.datetime | None = None  # None: never served
    artifact: str | None = None
    cdevent: bool = False
    changes: list[Change] = field(default_factory=list)
    needs_range: bool = False
    # The commit of the previous successful deployment of its environment (for the range).
    previous: str | None = None
    present: bool = False

    @property
    def key(self) -> str:
        return f"i:{self.service}:{self.id}"

    @property
    def order(self) -> tuple[dt.datetime, int]:
        return (self.finished_at, self.line)


@dataclass
class IncidentRecord(_Line):
    service: str
    id: str
    # None until known: a CDEvents incident learns them from its events, in any order.
    opened_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    environment: str | None = None
    title: str | None = None
    deployment: str | None = None
    artifact: str | None = None
    cdevent: bool = False
    resolved_line: int | None = None
    # Resolved attribution: the fact key, and Conveyor's own deployment when it is one.
    deployment_key: str | None = None
    deployment_id: int | None = None
    release_id: int | None = None

    @property
    def external_id(self) -> str:
        return f"{self.service}:{self.id}"


@dataclass
class Parsed:
    records: int = 0
    deployments: list[DeploymentRecord] = field(default_factory=list)
    incidents: dict[tuple[str, str], IncidentRecord] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    # The deployments read so far by key, to find one given twice.
    seen: dict[str, DeploymentRecord] = field(default_factory=dict, repr=False, compare=False)

    def add_deployment(self, rec: DeploymentRecord) -> None:
        earlier = self.seen.get(rec.key)
        if earlier is not None:
            if rec.cdevent and earlier.cdevent:
                self.duplicates += 1  # the same event delivered twice
                return
            raise LineError(
                rec.where.error(
                    "id",
                    f"deployment {rec.id!r} of {rec.service} is already on line {earlier.line}",
                )
            )
        if len(rec.key) > KEY_MAX:
            raise LineError(
                rec.where.error("id", f"service and id together may have {KEY_MAX - 3} characters")
            )
        self.seen[rec.key] = rec
        self.deployments.append(rec)


class Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_ERRORS]
            if len(self.items) > MAX_ERRORS or len(shown) == MAX_ERRORS:
                shown.append(f"(stopped after {MAX_ERRORS} errors)")
            raise ImportFailed(shown)


def validation_errors(where: Where, exc: ValidationError) -> list[str]:
    found = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "missing":
            message = "missing"
        else:
            message = _message(kind, err.get("input"), str(err["msg"]))
        found.append(where.error(name or None, message))
    return list(dict.fromkeys(found))  # a CDEvent's time stands for two fields


def _message(kind: str, value: object, default: str) -> str:
    if kind == "extra_forbidden":
        return f"unknown field (value {show(value)}); see docs/import.md"
    return default.removeprefix("Value error, ")


def validated(model: type[M], obj: dict[str, Any], where: Where, errors: Errors) -> M | None:
    """``obj`` as ``model``, or None with each of its errors added (named by line and field)."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        for message in validation_errors(where, exc):
            errors.add(message)
        return None


class LineError(Exception):
    """A line that cannot be read on (its message names it): the parser records it and goes
    on with the next line."""


# --- native lines -----------------------------------------------------------------------------


def native_deployment(
    obj: dict[str, Any], where: Where, errors: Errors, *, cdevent: bool = False
) -> DeploymentRecord | None:
    d = validated(DeploymentIn, obj, where, errors)
    if d is None:
        return None
    problems: list[str] = []
    if d.commit is None and not cdevent:
        problems.append(where.error("commit", "missing"))
    if d.finished_at < d.started_at:
        problems.append(where.error("finished_at", "before started_at"))
    if d.commits is not None and d.repository is not None:
        problems.append(where.error("repository", "give commits or repository, not both"))
    kind: DeploymentKind = d.kind_of or ("rollback" if d.rollback_of else "deploy")
    if kind == "deploy" and d.rollback_of is not None:
        problems.append(where.error("rollback_of", "only a rollback undoes a deployment"))
    if (
        kind == "deploy"
        and d.status == "succeeded"
        and d.commits is None
        and d.repository is None
        and not cdevent
    ):
        problems.append(
            where.error(
                "commits",
                "missing: give the commits the deployment brought ([] if none), or a "
                "repository to compute them from",
            )
        )
    if d.repository is not None and d.commit is None:
        problems.append(where.error("commit", "needed to compute the range from repository"))
    failed_at = d.failed_at
    if d.status == "succeeded" and failed_at is not None:
        problems.append(where.error("failed_at", "only a failed or rolled back deployment fails"))
    elif d.status != "succeeded" and failed_at is None:
        failed_at = d.finished_at  # when it ended failed: the latest the failure was known
    if failed_at is not None and failed_at < d.started_at:
        problems.append(where.error("failed_at", "before started_at"))
    if not d.served and d.status == "succeeded":
        problems.append(where.error("served", "a succeeded deployment served its users"))
    if not d.served and d.served_at is not None:
        problems.append(where.error("served_at", "given for a deployment that never served"))
    if d.served_at is not None and not d.started_at <= d.served_at <= d.finished_at:
        problems.append(where.error("served_at", "not between started_at and finished_at"))
    if problems:
        for message in problems:
            errors.add(message)
        return None
    commits = (
        [Change(c.sha, c.committed_at, c.authored_at) for c in d.commits]
        if d.commits is not None
        else None
    )
    return DeploymentRecord(
        where=where,
        service=d.service,
        environment=d.environment,
        id=d.id,
        tier=d.tier or default_tier(d.environment),
        kind=kind,
        result=d.status,
        sha=d.commit or "",
        started_at=d.started_at,
        finished_at=d.finished_at,
        failed_at=failed_at,
        rollback_of=f"i:{d.service}:{d.rollback_of}" if d.rollback_of else None,
        fixes_incident=d.fixes_incident,
        commits=commits if kind == "deploy" else None,  # a rollback brings no new commits
        repository=d.repository if kind == "deploy" else None,
        served_at=(d.served_at or d.started_at) if d.served else None,
        cdevent=cdevent,
    )


def native_incident(obj: dict[str, Any], where: Where, errors: Errors) -> IncidentRecord | None:
    i = validated(IncidentIn, obj, where, errors)
    if i is None:
        return None
    if i.resolved_at is not None and i.resolved_at < i.opened_at:
        errors.add(where.error("resolved_at", "before opened_at"))
        return None
    if len(f"{i.service}:{i.id}") > KEY_MAX:
        errors.add(where.error("id", f"service and id together may have {KEY_MAX - 1} characters"))
        return None
    return IncidentRecord(
        where=where,
        service=i.service,
        id=i.id,
        opened_at=i.opened_at,
        resolved_at=i.resolved_at,
        environment=i.environment,
        title=i.title,
        deployment=i.deployment,
    )
