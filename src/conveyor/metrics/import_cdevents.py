"""CDEvents in a history file: ``service.deployed|upgraded|rolledback`` and
``incident.detected|reported|resolved`` (v0.4; other versions of the same events are read the
same way), bare or wrapped in a CloudEvent. Other CDEvents are counted as ignored.

A service event becomes the native deployment record it stands for and is checked by the same
rules (metrics.import_records); its ``customData`` may override or complete what the event
says. The events of one incident merge into one incident record. Errors name the event's own
fields (``context.timestamp``, ``customData.service``, ``data.`` inside a CloudEvent), not the
native record's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.metrics.import_records import (
    KEY_MAX,
    DeploymentRecord,
    Errors,
    IncidentRecord,
    LineError,
    Parsed,
    Where,
    environment_name,
    native_deployment,
    parse_time,
    record_id,
    service_name,
    show,
    validated,
)

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
    "served",
    "served_at",
)

_GIT_SHA1 = re.compile(r"^[0-9a-f]{7,40}$")


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


def unwrap(obj: dict[str, Any], where: Where) -> tuple[dict[str, Any], Where] | None:
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
        raise LineError(where.error("type", f"{show(kind)} is not a CDEvent type (dev.cdevents.*)"))
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


def parse_cdevent(obj: dict[str, Any], where: Where, parsed: Parsed, errors: Errors) -> None:
    event = validated(_CDEvent, obj, where, errors)
    if event is None:
        return
    if not event.context.type.startswith(CDEVENTS_PREFIX):
        raise LineError(
            where.error("context.type", f"{show(event.context.type)} is not a CDEvent type")
        )
    parts = event.context.type.removeprefix(CDEVENTS_PREFIX).split(".")
    name = ".".join(parts[:2])
    if name in SERVICE_EVENTS:
        rec = _cdevent_deployment(event, name, where, errors)
        if rec is not None:
            parsed.add_deployment(rec)
    elif name in INCIDENT_EVENTS:
        _cdevent_incident(event, name, where, parsed)
    else:
        parsed.ignored[name] += 1


def _custom(event: _CDEvent) -> dict[str, Any]:
    return event.customData if isinstance(event.customData, dict) else {}


def _cdevent_deployment(
    event: _CDEvent, name: str, where: Where, errors: Errors
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
    rec = native_deployment(
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
            raise LineError(where.error(path, str(exc))) from None

    if "service" in custom:
        service = check(custom["service"], "customData.service", service_name)
    elif content.service is not None:
        service = check(
            _last_segment(content.service.id).lower(),
            "subject.content.service.id",
            service_name,
        )
    else:
        raise LineError(
            where.error(
                "subject.content.service",
                "missing: Conveyor needs the service the incident is about (or customData.service)",
            )
        )
    incident_id = check(event.subject.id, "subject.id", record_id)
    at = check(event.context.timestamp, "context.timestamp", parse_time)
    environment = None
    if "environment" in custom:
        environment = check(custom["environment"], "customData.environment", environment_name)
    elif content.environment is not None:
        environment = check(
            _last_segment(content.environment.id),
            "subject.content.environment.id",
            environment_name,
        )
    deployment = None
    if "deployment" in custom:
        deployment = check(custom["deployment"], "customData.deployment", record_id)
    if len(f"{service}:{incident_id}") > KEY_MAX:
        raise LineError(
            where.error("subject.id", f"service and id together may have {KEY_MAX - 1} characters")
        )
    key = (service, incident_id)
    rec = parsed.incidents.get(key)
    if rec is None:
        rec = IncidentRecord(
            where=where,
            service=service,
            id=incident_id,
            environment=environment,
            deployment=deployment,
            artifact=content.artifactId,
            cdevent=True,
        )
        parsed.incidents[key] = rec
    elif not rec.cdevent:
        raise LineError(
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
        raise LineError(
            Where(rec.resolved_line or where.line, prefix=where.prefix).error(
                "context.timestamp",
                f"incident {incident_id!r} resolved before it was detected (line {rec.line})",
            )
        )
