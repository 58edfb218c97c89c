"""History import: deployments and incidents from tools Conveyor did not run, as JSON Lines.

One record per line: native records (``"kind": "deployment"`` or ``"incident"``) or CDEvents
(``service.deployed|upgraded|rolledback``, ``incident.detected|reported|resolved``), bare or
wrapped in a CloudEvent. docs/import.md describes the formats; the rules that matter here:

- **All or nothing.** Every line is parsed and checked, every reference resolved and every
  commit range computed before anything is written; then everything is written in one
  transaction. Any bad line: nothing is stored, and each error names its line and field.
- **Idempotent.** A deployment becomes the fact ``i:<service>:<id>``, an incident the incident
  with external id ``<service>:<id>``; what already exists is left alone (only an imported
  incident that was open may be resolved by a later import). Importing a file twice changes
  nothing, and emits no event the second time.
- **Fast.** Existing keys are looked up in chunks and rows are inserted in batches.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from sqlalchemy import Table, insert, select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.errors import ConveyorError
from conveyor.metrics.facts import Change, DeploymentKind, DeploymentResult
from conveyor.metrics.ranges import commit_range
from conveyor.spec.fields import NAME_PATTERN, SERVICE_PATTERN, TIERS
from conveyor.store.db import Store, Writer
from conveyor.store.models import (
    Base,
    ChangeFactRow,
    Deployment,
    DeploymentFactRow,
    Incident,
    Service,
    utcnow,
)

SOURCE = "import"
# Errors shown at most (the first ones, in line order); parsing stops there.
MAX_ERRORS = 20
# Keys looked up per query, rows inserted per statement.
CHUNK = 900
INSERT_BATCH = 5000
# Serialises imports on PostgreSQL (SQLite's BEGIN IMMEDIATE already does).
IMPORT_LOCK = 7263005
# Rows written from which an import refreshes PostgreSQL's statistics of the fact tables.
ANALYZE_AFTER = 1000
# Where an imported service's repository is, when the import had to create the service (an
# incident needs a service row): not fetchable; `conveyor service add` sets the real one.
IMPORTED_REPOSITORY = "imported://"
KEY_MAX = 300
CDEVENTS_PREFIX = "dev.cdevents."
SERVICE_EVENTS = {"service.deployed", "service.upgraded", "service.rolledback"}
INCIDENT_EVENTS = {"incident.detected", "incident.reported", "incident.resolved"}
# customData keys of a service event that override or complete what the CDEvent says.
CUSTOM_DEPLOYMENT_KEYS = (
    "service",
    "environment",
    "tier",
    "commit",
    "commits",
    "repository",
    "started_at",
    "failed_at",
    "rollback_of",
    "fixes_incident",
)

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{7,40}$")
_SERVICE = re.compile(SERVICE_PATTERN)
_ENVIRONMENT = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONVEYOR_DEPLOYMENT = re.compile(r"^c?([0-9]{1,18})$")


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
            f"expected an RFC 3339 time as a string (e.g. 2024-05-01T10:00:00Z), got {_show(value)}"
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


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sha(value: object) -> str:
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a commit id (7 to 64 hexadecimal digits)")
    return value.lower()


def _service_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVICE.fullmatch(value) or len(value) > 200:
        raise ValueError(
            f"{_show(value)} is not a service name: use lowercase letters, digits, '.', '_' and "
            "'-', starting with a letter or digit (at most 200)"
        )
    return value


def _environment_name(value: object) -> str:
    if not isinstance(value, str) or not _ENVIRONMENT.fullmatch(value) or len(value) > 200:
        raise ValueError(
            f"{_show(value)} is not an environment name: use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-' (at most 200)"
        )
    return value


def _record_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or _CONTROL.search(value):
        raise ValueError(
            f"{_show(value)} is not an id: a non-empty string of at most 200 characters, "
            "without control characters"
        )
    return value


def _fixes(value: object) -> bool:
    """true/false, or the id of the incident the deployment fixed (which means true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        return True
    raise ValueError(f"expected true, false or an incident id, got {_show(value)}")


def _title(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value[:2000]


Time = Annotated[dt.datetime, PlainValidator(parse_time)]
Sha = Annotated[str, PlainValidator(_sha)]
ServiceName = Annotated[str, PlainValidator(_service_name)]
EnvironmentName = Annotated[str, PlainValidator(_environment_name)]
RecordId = Annotated[str, PlainValidator(_record_id)]
Fixes = Annotated[bool, PlainValidator(_fixes)]
Title = Annotated[str, PlainValidator(_title)]


def default_tier(environment: str) -> str:
    """production for "production"/"prod", the name if it is a tier, else staging."""
    name = environment.lower()
    if name in ("production", "prod"):
        return "production"
    return name if name in TIERS else "staging"


# --- the native records -----------------------------------------------------------------------


class CommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha: Sha
    committed_at: Time
    authored_at: Time | None = None


class DeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


class IncidentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["incident"]
    service: ServiceName
    id: RecordId
    opened_at: Time
    resolved_at: Time | None = None
    deployment: RecordId | None = None
    environment: EnvironmentName | None = None
    title: Title | None = None


# --- CDEvents (v0.4; other versions of the same events are read the same way) -----------------


class _Ref(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1)]
    source: str | None = None


class _Context(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1)]
    type: str
    timestamp: Any
    version: str | None = None
    source: str | None = None


class _Content(BaseModel):
    model_config = ConfigDict(extra="allow")

    environment: _Ref | None = None
    service: _Ref | None = None
    artifactId: str | None = None
    description: str | None = None


class _Subject(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1)]
    source: str | None = None
    type: str | None = None
    content: _Content = Field(default_factory=_Content)


class _CDEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    context: _Context
    subject: _Subject
    customData: Any = None


def _last_segment(value: str) -> str:
    """service/myapp -> myapp: CDEvents ids often carry a kind or a namespace."""
    return value.rstrip("/").rsplit("/", 1)[-1]


def _purl_commit(artifact: str | None) -> str | None:
    """The commit in a package URL's version (pkg:golang/x/y@234fd47e07d1004f0aed9c), if it is
    a git commit id; an OCI digest (sha256:...) is not."""
    if not artifact or not artifact.startswith("pkg:") or "@" not in artifact:
        return None
    version = artifact.rsplit("@", 1)[1].split("?", 1)[0].split("#", 1)[0]
    return version.lower() if _GIT_SHA1.fullmatch(version.lower()) else None


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
class DeploymentRecord:
    where: Where
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
    artifact: str | None = None
    cdevent: bool = False
    changes: list[Change] = field(default_factory=list)
    needs_range: bool = False
    # The commit of the previous successful deployment of its environment (for the range).
    previous: str | None = None
    present: bool = False

    @property
    def line(self) -> int:
        return self.where.line

    @property
    def key(self) -> str:
        return f"i:{self.service}:{self.id}"

    @property
    def order(self) -> tuple[dt.datetime, int]:
        return (self.finished_at, self.line)


@dataclass
class IncidentRecord:
    where: Where
    service: str
    id: str
    opened_at: dt.datetime | None
    resolved_at: dt.datetime | None
    environment: str | None
    title: str | None
    deployment: str | None
    artifact: str | None = None
    cdevent: bool = False
    resolved_line: int | None = None
    # Resolved attribution: the fact key, and Conveyor's own deployment when it is one.
    deployment_key: str | None = None
    deployment_id: int | None = None
    release_id: int | None = None

    @property
    def line(self) -> int:
        return self.where.line

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


@dataclass
class ImportSummary:
    records: int = 0
    deployments_added: int = 0
    deployments_present: int = 0
    changes_added: int = 0
    incidents_added: int = 0
    incidents_present: int = 0
    incidents_resolved: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "dry_run": self.dry_run,
            "deployments": {
                "added": self.deployments_added,
                "present": self.deployments_present,
                "changes_added": self.changes_added,
            },
            "incidents": {
                "added": self.incidents_added,
                "present": self.incidents_present,
                "resolved": self.incidents_resolved,
            },
            "ignored": dict(self.ignored),
            "duplicates": self.duplicates,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


class _Errors:
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


def _validation_errors(where: Where, exc: ValidationError) -> list[str]:
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
        return f"unknown field (value {_show(value)}); see docs/import.md"
    return default.removeprefix("Value error, ")


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); bad bytes name their line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFailed([f"line {line}: not UTF-8 text ({exc.reason})"]) from None


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, content) of each line that holds a record: blank lines and # comments skipped."""
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def parse(text: str) -> Parsed:
    """Parse and check every line; raise ImportFailed with the errors of the bad ones."""
    parsed = Parsed()
    errors = _Errors()
    seen: dict[str, DeploymentRecord] = {}
    for number, content in lines(text):
        if errors.full:
            break
        parsed.records += 1
        where = Where(number)
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as exc:
            errors.add(where.error(None, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            errors.add(where.error(None, "not valid JSON: nested too deeply"))
            continue
        if not isinstance(obj, dict):
            errors.add(where.error(None, "a record must be a JSON object"))
            continue
        try:
            _parse_record(obj, where, parsed, seen, errors)
        except _LineError as exc:
            errors.add(str(exc))
    errors.raise_if_any()
    return parsed


class _LineError(Exception):
    pass


def _parse_record(
    obj: dict[str, Any],
    where: Where,
    parsed: Parsed,
    seen: dict[str, DeploymentRecord],
    errors: _Errors,
) -> None:
    kind = obj.get("kind")
    if kind == "deployment":
        rec = _native_deployment(obj, where, errors)
        if rec is not None:
            _add_deployment(rec, parsed, seen)
        return
    if kind == "incident":
        inc = _native_incident(obj, where, errors)
        if inc is not None:
            key = (inc.service, inc.id)
            if key in parsed.incidents:
                raise _LineError(
                    where.error(
                        "id",
                        f"incident {inc.id!r} of {inc.service} is already on line "
                        f"{parsed.incidents[key].line}",
                    )
                )
            parsed.incidents[key] = inc
        return
    cdevent = _unwrap(obj, where)
    if cdevent is not None:
        _parse_cdevent(*cdevent, parsed, seen, errors)
        return
    if "kind" in obj:
        raise _LineError(
            where.error("kind", f"{_show(kind)} is not a record kind: use deployment or incident")
        )
    raise _LineError(
        where.error(
            "kind",
            'missing: a record is {"kind": "deployment", ...}, {"kind": "incident", ...} or a '
            "CDEvent (context.type dev.cdevents.*)",
        )
    )


def _add_deployment(
    rec: DeploymentRecord, parsed: Parsed, seen: dict[str, DeploymentRecord]
) -> None:
    earlier = seen.get(rec.key)
    if earlier is not None:
        if rec.cdevent and earlier.cdevent:
            parsed.duplicates += 1  # the same event delivered twice
            return
        raise _LineError(
            rec.where.error(
                "id", f"deployment {rec.id!r} of {rec.service} is already on line {earlier.line}"
            )
        )
    if len(rec.key) > KEY_MAX:
        raise _LineError(
            rec.where.error("id", f"service and id together may have {KEY_MAX - 3} characters")
        )
    seen[rec.key] = rec
    parsed.deployments.append(rec)


def _native_deployment(
    obj: dict[str, Any], where: Where, errors: _Errors, *, cdevent: bool = False
) -> DeploymentRecord | None:
    try:
        d = DeploymentIn.model_validate(obj)
    except ValidationError as exc:
        for message in _validation_errors(where, exc):
            errors.add(message)
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
        cdevent=cdevent,
    )


def _native_incident(obj: dict[str, Any], where: Where, errors: _Errors) -> IncidentRecord | None:
    try:
        i = IncidentIn.model_validate(obj)
    except ValidationError as exc:
        for message in _validation_errors(where, exc):
            errors.add(message)
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


def _unwrap(obj: dict[str, Any], where: Where) -> tuple[dict[str, Any], Where] | None:
    """The CDEvent in a line: bare, or in a CloudEvent (structured mode), whose ``data`` holds
    the CDEvent, or whose attributes are the context and ``data`` the rest."""
    context = obj.get("context")
    if isinstance(context, dict) and str(context.get("type", "")).startswith(CDEVENTS_PREFIX):
        return obj, where
    if "specversion" not in obj:
        return None
    data = obj.get("data")
    if isinstance(data, dict) and isinstance(data.get("context"), dict):
        return data, Where(where.line, prefix="data.")
    if isinstance(context, dict) and isinstance(obj.get("subject"), dict):
        return obj, where
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind.startswith(CDEVENTS_PREFIX):
        raise _LineError(
            where.error("type", f"{_show(kind)} is not a CDEvent type (dev.cdevents.*)")
        )
    body = data if isinstance(data, dict) else {}
    event = {
        "context": {
            "id": obj.get("id"),
            "type": kind,
            "timestamp": obj.get("time"),
            "source": obj.get("source"),
            "version": body.get("version"),
        },
        "subject": body.get("subject", obj.get("subject")),
        "customData": body.get("customData"),
    }
    paths = {"context.id": "id", "context.timestamp": "time", "context.type": "type"}
    return event, _CloudWhere(where.line, prefix="data.", cloud=paths)


@dataclass
class _CloudWhere(Where):
    """CloudEvent attributes stand for the CDEvent's context; the rest is under data."""

    cloud: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str) -> str:
        for path, attribute in self.cloud.items():
            if name == path or name.startswith(path + "."):
                return attribute + name[len(path) :]
        if name.startswith("context"):
            return name
        return super().__call__(name)


def _parse_cdevent(
    obj: dict[str, Any],
    where: Where,
    parsed: Parsed,
    seen: dict[str, DeploymentRecord],
    errors: _Errors,
) -> None:
    try:
        event = _CDEvent.model_validate(obj)
    except ValidationError as exc:
        for message in _validation_errors(where, exc):
            errors.add(message)
        return
    if not event.context.type.startswith(CDEVENTS_PREFIX):
        raise _LineError(
            where.error("context.type", f"{_show(event.context.type)} is not a CDEvent type")
        )
    parts = event.context.type.removeprefix(CDEVENTS_PREFIX).split(".")
    name = ".".join(parts[:2])
    if name in SERVICE_EVENTS:
        rec = _cdevent_deployment(event, name, where, errors)
        if rec is not None:
            _add_deployment(rec, parsed, seen)
    elif name in INCIDENT_EVENTS:
        _cdevent_incident(event, name, where, parsed)
    else:
        parsed.ignored[name] += 1


def _custom(event: _CDEvent) -> dict[str, Any]:
    return event.customData if isinstance(event.customData, dict) else {}


def _cdevent_deployment(
    event: _CDEvent, name: str, where: Where, errors: _Errors
) -> DeploymentRecord | None:
    custom = _custom(event)
    content = event.subject.content
    native: dict[str, Any] = {
        "kind": "deployment",
        "id": event.context.id,
        "started_at": event.context.timestamp,
        "finished_at": event.context.timestamp,
        "status": "succeeded",
        "kind_of": "rollback" if name == "service.rolledback" else "deploy",
    }
    paths = {
        "kind": "context.type",
        "kind_of": "context.type",
        "status": "context.type",
        "id": "context.id",
        "started_at": "context.timestamp",
        "finished_at": "context.timestamp",
        "service": "subject.id",
        "environment": "subject.content.environment.id",
        "commit": "subject.content.artifactId",
    }
    native["service"] = _last_segment(event.subject.id).lower()
    if content.environment is not None:
        native["environment"] = _last_segment(content.environment.id)
    commit = _purl_commit(content.artifactId)
    if commit:
        native["commit"] = commit
    for key in CUSTOM_DEPLOYMENT_KEYS:
        if key in custom:
            native[key] = custom[key]
            paths[key] = f"customData.{key}"
    rec = _native_deployment(
        native,
        Where(where.line, paths=_prefixed(paths, where), prefix=where.prefix),
        errors,
        cdevent=True,
    )
    if rec is not None:
        rec.artifact = content.artifactId
    return rec


def _prefixed(paths: dict[str, str], where: Where) -> dict[str, str]:
    return {k: where(v) for k, v in paths.items()}


def _cdevent_incident(event: _CDEvent, name: str, where: Where, parsed: Parsed) -> None:
    custom = _custom(event)
    content = event.subject.content

    def check(value: object, path: str, validate: Any) -> Any:
        try:
            return validate(value)
        except ValueError as exc:
            raise _LineError(where.error(path, str(exc))) from None

    if "service" in custom:
        service = check(custom["service"], "customData.service", _service_name)
    elif content.service is not None:
        service = check(
            _last_segment(content.service.id).lower(),
            "subject.content.service.id",
            _service_name,
        )
    else:
        raise _LineError(
            where.error(
                "subject.content.service",
                "missing: Conveyor needs the service the incident is about (or customData.service)",
            )
        )
    incident_id = check(event.subject.id, "subject.id", _record_id)
    at = check(event.context.timestamp, "context.timestamp", parse_time)
    environment = None
    if "environment" in custom:
        environment = check(custom["environment"], "customData.environment", _environment_name)
    elif content.environment is not None:
        environment = check(
            _last_segment(content.environment.id),
            "subject.content.environment.id",
            _environment_name,
        )
    deployment = None
    if "deployment" in custom:
        deployment = check(custom["deployment"], "customData.deployment", _record_id)
    if len(f"{service}:{incident_id}") > KEY_MAX:
        raise _LineError(
            where.error("subject.id", f"service and id together may have {KEY_MAX - 1} characters")
        )
    key = (service, incident_id)
    rec = parsed.incidents.get(key)
    if rec is None:
        rec = IncidentRecord(
            where=where,
            service=service,
            id=incident_id,
            opened_at=None,
            resolved_at=None,
            environment=environment,
            title=None,
            deployment=deployment,
            artifact=content.artifactId,
            cdevent=True,
        )
        parsed.incidents[key] = rec
    elif not rec.cdevent:
        raise _LineError(
            where.error(
                "subject.id",
                f"incident {incident_id!r} of {service} is already on line {rec.line}",
            )
        )
    if name == "incident.resolved":
        if rec.resolved_at is None or at < rec.resolved_at:
            rec.resolved_at, rec.resolved_line = at, where.line
    else:
        if rec.opened_at is None or at < rec.opened_at:
            rec.opened_at = at
            rec.where = where
        if content.description and rec.title is None:
            rec.title = content.description[:2000]
    rec.environment = rec.environment or environment
    rec.deployment = rec.deployment or deployment
    rec.artifact = rec.artifact or content.artifactId
    if rec.opened_at and rec.resolved_at and rec.resolved_at < rec.opened_at:
        raise _LineError(
            Where(rec.resolved_line or where.line, prefix=where.prefix).error(
                "context.timestamp",
                f"incident {incident_id!r} resolved before it was detected (line {rec.line})",
            )
        )


# --- resolving against the store --------------------------------------------------------------

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _StoredIncident:
    id: int
    status: str
    resolved_at: dt.datetime | None


@dataclass
class Known:
    """What the store already holds of a file's records."""

    fact_keys: set[str] = field(default_factory=set)
    incidents: dict[str, _StoredIncident] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, parsed: Parsed) -> Known:
        known = cls()
        keys = [d.key for d in parsed.deployments]
        for chunk in _chunks(keys):
            known.fact_keys.update(
                session.scalars(
                    select(DeploymentFactRow.key).where(DeploymentFactRow.key.in_(chunk))
                )
            )
        external = [i.external_id for i in parsed.incidents.values()]
        for chunk in _chunks(external):
            for row in session.execute(
                select(Incident.external_id, Incident.id, Incident.status, Incident.resolved_at)
                .where(Incident.external_id.in_(chunk))
                .order_by(Incident.id)
            ):
                if row.external_id not in known.incidents:
                    known.incidents[row.external_id] = _StoredIncident(
                        row.id, row.status, row.resolved_at
                    )
        return known


@dataclass
class Plan:
    parsed: Parsed
    deployments: list[DeploymentRecord]  # new ones
    incidents: list[IncidentRecord]  # new ones
    resolutions: list[tuple[int, dt.datetime]]  # (incident row id, resolved_at)
    present_deployments: int
    present_incidents: int
    warnings: list[str]

    def summary(self, *, dry_run: bool) -> ImportSummary:
        return ImportSummary(
            records=self.parsed.records,
            deployments_added=len(self.deployments),
            deployments_present=self.present_deployments,
            changes_added=sum(len(d.changes) for d in self.deployments),
            incidents_added=len(self.incidents),
            incidents_present=self.present_incidents,
            incidents_resolved=len(self.resolutions),
            ignored=dict(self.parsed.ignored),
            duplicates=self.parsed.duplicates,
            warnings=list(self.warnings),
            dry_run=dry_run,
        )


def _groups(records: Iterable[DeploymentRecord]) -> dict[tuple[str, str], list[DeploymentRecord]]:
    groups: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for rec in records:
        groups.setdefault((rec.service, rec.environment), []).append(rec)
    for group in groups.values():
        group.sort(key=lambda r: r.order)
    return groups


def _stored_facts(
    session: Session, service: str, environment: str, *, successes_only: bool
) -> list[tuple[dt.datetime, str, str]]:
    """(finished_at, key, sha) of the stored deployment facts of one environment, oldest first."""
    query = select(
        DeploymentFactRow.finished_at, DeploymentFactRow.key, DeploymentFactRow.sha
    ).where(
        DeploymentFactRow.service == service,
        DeploymentFactRow.environment == environment,
        DeploymentFactRow.kind == "deploy",
    )
    if successes_only:
        query = query.where(DeploymentFactRow.result == "succeeded")
    rows = session.execute(query.order_by(DeploymentFactRow.finished_at, DeploymentFactRow.id))
    return [(r.finished_at, r.key, r.sha) for r in rows]


def _infer_rollbacks(
    session: Session, groups: dict[tuple[str, str], list[DeploymentRecord]]
) -> None:
    """A CDEvents service.rolledback undoes the deployment before it in its environment: it
    gets that deployment as ``rollback_of``; when that deployment came from a CDEvent of this
    file too (it has no status of its own), it becomes ``rolled_back`` (failed when it ended)."""
    for (service, environment), group in groups.items():
        todo = [r for r in group if r.cdevent and r.kind == "rollback" and r.rollback_of is None]
        if not todo:
            continue
        stored = _stored_facts(session, service, environment, successes_only=False)
        file_keys = {r.key for r in group}
        stored = [s for s in stored if s[1] not in file_keys]
        stored_times = [s[0] for s in stored]
        deploys = [r for r in group if r.kind == "deploy"]
        deploy_orders = [r.order for r in deploys]
        for rec in todo:
            before = bisect.bisect_left(deploy_orders, rec.order) - 1
            candidate = deploys[before] if before >= 0 else None
            index = bisect.bisect_left(stored_times, rec.finished_at) - 1
            from_store = stored[index] if index >= 0 else None
            if candidate is not None and (
                from_store is None or candidate.finished_at >= from_store[0]
            ):
                rec.rollback_of = candidate.key
                if candidate.cdevent and candidate.result == "succeeded" and not candidate.present:
                    candidate.result, candidate.failed_at = "rolled_back", candidate.finished_at
            elif from_store is not None:
                rec.rollback_of = from_store[1]


def _carry_changes(groups: dict[tuple[str, str], list[DeploymentRecord]]) -> None:
    """Changes are recorded on successful deployments only (as for Conveyor's own): the commits
    listed on a failed or rolled back deployment go to the next successful deployment of the
    same environment in the file (unless it lists them itself). A successful deployment with a
    repository gets its range computed from git instead."""
    for group in groups.values():
        pending: dict[str, Change] = {}
        for rec in group:
            if rec.kind == "rollback":
                continue
            if rec.result != "succeeded":
                for change in rec.commits or ():
                    pending.setdefault(change.sha, change)
                continue
            if rec.repository is not None:
                rec.needs_range = True
            else:
                own = list(rec.commits or ())
                shas = {c.sha for c in own}
                rec.changes = own + [c for sha, c in pending.items() if sha not in shas]
            pending.clear()


def _resolve_attribution(
    session: Session, parsed: Parsed, incidents: list[IncidentRecord], errors: _Errors
) -> None:
    """An incident's ``deployment``: a deployment of the same service in this file or imported
    before (its fact key), else Conveyor's own deployment (its id, or c<id>). A CDEvent
    incident without one is attributed to the latest deployment of the file of the same
    service and artifact that ended before the incident opened, if any."""
    file_deployments = {d.key: d for d in parsed.deployments}
    wanted = [
        f"i:{i.service}:{i.deployment}"
        for i in incidents
        if i.deployment and f"i:{i.service}:{i.deployment}" not in file_deployments
    ]
    stored: dict[str, str] = {}  # fact key -> environment
    for chunk in _chunks(wanted):
        stored.update(
            (row.key, row.environment)
            for row in session.execute(
                select(DeploymentFactRow.key, DeploymentFactRow.environment).where(
                    DeploymentFactRow.key.in_(chunk)
                )
            )
        )
    numbers = {
        int(m.group(1))
        for i in incidents
        if i.deployment and (m := _CONVEYOR_DEPLOYMENT.match(i.deployment))
    }
    own: dict[int, tuple[str, int, str]] = {}
    for id_chunk in _chunks(sorted(numbers)):
        for row in session.execute(
            select(Deployment.id, Service.name, Deployment.release_id, Deployment.environment)
            .join(Service, Service.id == Deployment.service_id)
            .where(Deployment.id.in_(id_chunk))
        ):
            own[row.id] = (row.name, row.release_id, row.environment)
    by_artifact: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for d in parsed.deployments:
        if d.artifact and d.kind == "deploy":
            by_artifact.setdefault((d.service, d.artifact), []).append(d)
    for inc in incidents:
        if inc.deployment:
            key = f"i:{inc.service}:{inc.deployment}"
            if key in file_deployments or key in stored:
                inc.deployment_key = key
                dep = file_deployments.get(key)
                inc.environment = inc.environment or (
                    dep.environment if dep is not None else stored[key]
                )
                continue
            m = _CONVEYOR_DEPLOYMENT.match(inc.deployment)
            number = int(m.group(1)) if m else None
            if number is not None and number in own and own[number][0] == inc.service:
                inc.deployment_key = f"c{number}"
                inc.deployment_id, inc.release_id = number, own[number][1]
                inc.environment = inc.environment or own[number][2]
                continue
            errors.add(
                inc.where.error(
                    "customData.deployment" if inc.cdevent else "deployment",
                    f"no deployment {inc.deployment!r} of {inc.service} in this file, in "
                    "earlier imports or among Conveyor's deployments",
                )
            )
        elif inc.artifact and inc.opened_at is not None:
            matches = [
                d
                for d in by_artifact.get((inc.service, inc.artifact), ())
                if d.finished_at <= inc.opened_at
            ]
            if matches:
                dep = max(matches, key=lambda d: d.order)
                inc.deployment_key = dep.key
                inc.environment = inc.environment or dep.environment


def plan(session: Session, parsed: Parsed, base: Path | None) -> Plan:
    """Decide what to write: which records are new, what the rollbacks undo, which changes
    each successful deployment brings, whom each incident is attributed to. Commit ranges from
    a repository are computed afterwards (compute_ranges), outside any transaction."""
    known = Known.load(session, parsed)
    errors = _Errors()
    for rec in parsed.deployments:
        rec.present = rec.key in known.fact_keys
    groups = _groups(parsed.deployments)
    _infer_rollbacks(session, groups)
    _carry_changes(groups)
    new_incidents: list[IncidentRecord] = []
    resolutions: list[tuple[int, dt.datetime]] = []
    present_incidents = 0
    warnings: list[str] = []
    for inc in parsed.incidents.values():
        stored = known.incidents.get(inc.external_id)
        if stored is not None:
            present_incidents += 1
            if stored.status == "open" and inc.resolved_at is not None:
                resolutions.append((stored.id, inc.resolved_at))
        elif inc.opened_at is not None:
            new_incidents.append(inc)
        else:
            warnings.append(
                f"line {inc.resolved_line or inc.line}: incident {inc.id!r} of {inc.service} "
                "was resolved but never detected (neither in this file nor imported before): "
                "skipped"
            )
    if parsed.records == 0:
        warnings.append("the file holds no records (only blank lines and # comments)")
    _resolve_attribution(session, parsed, new_incidents, errors)
    for rec in parsed.deployments:
        if rec.needs_range and not rec.present:
            _check_repository(rec, base, errors)
    errors.raise_if_any()
    _previous_successes(session, groups)
    new = [d for d in parsed.deployments if not d.present]
    return Plan(
        parsed=parsed,
        deployments=new,
        incidents=new_incidents,
        resolutions=resolutions,
        present_deployments=len(parsed.deployments) - len(new),
        present_incidents=present_incidents,
        warnings=warnings,
    )


def _check_repository(rec: DeploymentRecord, base: Path | None, errors: _Errors) -> None:
    assert rec.repository is not None
    path = Path(rec.repository)
    if not path.is_absolute():
        if base is None:
            errors.add(
                rec.where.error(
                    "repository",
                    f"{rec.repository!r} is relative: through the API, give an absolute path "
                    "on the server",
                )
            )
            return
        path = base / path
    if not path.is_dir():
        errors.add(rec.where.error("repository", f"{str(path)!r} is not a directory"))
        return
    rec.repository = str(path)


def _previous_successes(
    session: Session, groups: dict[tuple[str, str], list[DeploymentRecord]]
) -> None:
    """For each new successful deployment with a repository: the commit of the previous
    successful deployment of its environment, in the file or the store (by finished_at; one
    of the file comes after a stored one finished at the same time)."""
    for (service, environment), group in groups.items():
        todo = [r for r in group if r.needs_range and not r.present]
        if not todo:
            continue
        file_keys = {r.key for r in group}
        successes = [
            (finished, -1, sha)
            for finished, key, sha in _stored_facts(
                session, service, environment, successes_only=True
            )
            if key not in file_keys and sha
        ]
        successes += [
            (r.finished_at, r.line, r.sha)
            for r in group
            if r.kind == "deploy" and r.result == "succeeded" and r.sha
        ]
        successes.sort()
        orders = [(s[0], s[1]) for s in successes]
        for rec in todo:
            index = bisect.bisect_left(orders, rec.order) - 1
            rec.previous = successes[index][2] if index >= 0 else None


def compute_ranges(records: Iterable[DeploymentRecord]) -> None:
    """git rev-list NEW ^PREVIOUS for each deployment that needs it; errors name the line."""
    errors = _Errors()
    for rec in records:
        if not rec.needs_range or rec.present:
            continue
        assert rec.repository is not None
        try:
            rec.changes = commit_range(Path(rec.repository), rec.sha, rec.previous)
        except ConveyorError as exc:
            errors.add(rec.where.error("repository", exc.message))
            if errors.full:
                break
    errors.raise_if_any()


# --- writing ----------------------------------------------------------------------------------


def _write(w: Writer, work: Plan, actor: str | None, origin: str) -> ImportSummary:
    session = w.session
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK})
    # Another import may have written some of these since they were planned.
    known = Known.load(session, work.parsed)
    deployments = [d for d in work.deployments if d.key not in known.fact_keys]
    incidents = [i for i in work.incidents if i.external_id not in known.incidents]
    ids: dict[str, int] = {}
    for records in _chunks(deployments, INSERT_BATCH):
        rows: list[dict[str, Any]] = [
            {
                "key": d.key,
                "source": SOURCE,
                "service": d.service,
                "environment": d.environment,
                "tier": d.tier,
                "kind": d.kind,
                "result": d.result,
                "sha": d.sha,
                "started_at": d.started_at,
                "finished_at": d.finished_at,
                "failed_at": d.failed_at,
                "rollback_of": d.rollback_of,
                "fixes_incident": d.fixes_incident,
                "stages": {},
                "deployment_id": None,
            }
            for d in records
        ]
        # Core executemany: the ORM's bulk insert with RETURNING is many times slower here.
        session.execute(insert(_table(DeploymentFactRow)), rows)
    for keys in _chunks([d.key for d in deployments]):
        ids.update(
            (row.key, row.id)
            for row in session.execute(
                select(DeploymentFactRow.key, DeploymentFactRow.id).where(
                    DeploymentFactRow.key.in_(keys)
                )
            )
        )
    # Rows without author date leave out its column (and seen_at, unknown for imports): half
    # as many values to convert, the insert's largest cost.
    dated: list[dict[str, Any]] = []
    undated: list[dict[str, Any]] = []
    for d in deployments:
        fact_id = ids[d.key]
        for c in d.changes:
            if c.authored_at is None:
                undated.append({"fact_id": fact_id, "sha": c.sha, "committed_at": c.committed_at})
            else:
                dated.append(
                    {
                        "fact_id": fact_id,
                        "sha": c.sha,
                        "committed_at": c.committed_at,
                        "authored_at": c.authored_at,
                    }
                )
    for rows_of_kind in (undated, dated):
        for change_rows in _chunks(rows_of_kind, INSERT_BATCH):
            session.execute(insert(_table(ChangeFactRow)), list(change_rows))
    changes = len(undated) + len(dated)
    service_ids = _services(w, sorted({i.service for i in incidents}))
    incident_rows = [
        {
            "service_id": service_ids[i.service],
            "environment": i.environment,
            "status": "resolved" if i.resolved_at else "open",
            "title": i.title or f"imported incident {i.id}",
            "source": SOURCE,
            "deployment_id": i.deployment_id,
            "release_id": i.release_id,
            "fingerprint": None,
            "external_id": i.external_id,
            "opened_at": i.opened_at,
            "resolved_at": i.resolved_at,
            "resolved_by": SOURCE if i.resolved_at else None,
            "data": {"deployment_key": i.deployment_key} if i.deployment_key else {},
        }
        for i in incidents
    ]
    for incident_batch in _chunks(incident_rows, INSERT_BATCH):
        session.execute(insert(_table(Incident)), list(incident_batch))
    resolved = 0
    for row_id, resolved_at in work.resolutions:
        incident = session.get(Incident, row_id)
        if incident is not None and incident.status == "open":
            incident.status, incident.resolved_at, incident.resolved_by = (
                "resolved",
                resolved_at,
                SOURCE,
            )
            resolved += 1
    summary = work.summary(dry_run=False)
    summary.deployments_added = len(deployments)
    summary.deployments_present = len(work.parsed.deployments) - len(deployments)
    summary.changes_added = changes
    summary.incidents_added = len(incidents)
    summary.incidents_present = work.present_incidents + len(work.incidents) - len(incidents)
    summary.incidents_resolved = resolved
    if deployments or incidents or resolved:
        w.emit(
            "history.imported",
            actor=actor,
            origin=origin,
            deployments=len(deployments),
            changes=changes,
            incidents=len(incidents),
            resolved=resolved,
        )
    if postgres and len(deployments) + len(incidents) >= ANALYZE_AFTER:
        # Fresh statistics, and PostgreSQL drops the plans it cached for these tables: a plan
        # made while they were nearly empty (a sequential scan per key lookup) would make the
        # next import of this size take minutes instead of seconds.
        session.execute(sql("ANALYZE deployment_facts, change_facts, incidents"))
    return summary


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


def _services(w: Writer, names: Sequence[str]) -> dict[str, int]:
    """The ids of these services, registering those not known yet (an incident needs one)."""
    found: dict[str, int] = {}
    for chunk in _chunks(names):
        found.update(
            (row.name, row.id)
            for row in w.session.execute(
                select(Service.name, Service.id).where(Service.name.in_(chunk))
            )
        )
    for name in names:
        if name not in found:
            repository = IMPORTED_REPOSITORY + name
            service = Service(name=name, repository=repository, created_at=utcnow())
            w.session.add(service)
            w.session.flush()
            w.emit("service.registered", service=name, repository=repository, by="import")
            found[name] = service.id
    return found


def import_history(
    store: Store,
    text: str,
    *,
    base: Path | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    origin: str = "",
) -> ImportSummary:
    """Import a JSON Lines history; all or nothing. ``base`` resolves relative repository
    paths (None: they are refused). With ``dry_run`` everything is checked (commit ranges
    included) and the summary says what would be written; nothing is."""
    started = time.perf_counter()
    with _collector_paused():
        parsed = parse(text)
        with store.session() as session:
            work = plan(session, parsed, base)
        compute_ranges(work.deployments)
        nothing = not (work.deployments or work.incidents or work.resolutions)
        if dry_run or nothing:
            summary = work.summary(dry_run=dry_run)
        else:
            try:
                with store.write() as w:
                    summary = _write(w, work, actor, origin)
            except IntegrityError:
                raise ImportFailed(
                    ["another import wrote some of the same deployments at the same time"],
                    hint="nothing from this file was imported; import it again",
                ) from None
    summary.seconds = time.perf_counter() - started
    return summary


class _Collector:
    """Pauses Python's cyclic garbage collector while imports run: a large file makes hundreds
    of thousands of objects that live until the import ends, and the collector would scan
    them again and again (about 40 % of the parsing time). Reference counting still frees
    everything; the collector resumes when the last concurrent import ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.was_enabled = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0 and self.was_enabled:
                    gc.enable()


_collector_paused = _Collector().paused
