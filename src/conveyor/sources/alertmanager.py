"""Alertmanager's webhook notifications: validate them, then normalise them into `Alert`s.

Alertmanager (``webhook_configs``) POSTs one JSON document per notification of an alert group,
in its payload format version 4::

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing|resolved",
     "receiver": "...", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
     "externalURL": "http://alertmanager:9093",
     "alerts": [{"status": "firing|resolved", "labels": {}, "annotations": {},
                 "startsAt": "<RFC 3339>", "endsAt": "<RFC 3339>", "generatorURL": "...",
                 "fingerprint": "<hex>"}]}

Like the forge webhooks (conveyor.forges), this module is the only place that reads the payload:
nothing past it sees raw JSON. Labels and annotations are data; they are never interpreted
beyond the few names Conveyor looks up (``service``, ``environment``/``env``, ``deployment``,
``alertname``, ``summary``). A body that does not have this shape is refused as a whole with
`AlertPayloadError` (the caller answers 400 and stores nothing): Alertmanager does not retry a
4xx, which is right for a body that would be refused again.

Times: ``startsAt`` is when the alert's condition began (Prometheus' "active since", before the
rule's ``for:`` elapsed); ``endsAt`` is when a resolved alert ended. For a firing alert
``endsAt`` is either Go's zero time or when the alert will expire unless Prometheus sends it
again, so it means nothing to an incident and is dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from conveyor import jsonio
from conveyor.engine.alert_model import Alert, AlertNotification, Status

# Prometheus label names; values and annotations are free text, bounded.
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=200)]
LabelValue = Annotated[str, StringConstraints(max_length=4096)]
AnnotationValue = Annotated[str, StringConstraints(max_length=65536)]
MAX_LABELS = 200
MAX_ALERTS = 10_000
# Go's zero time.Time (year 1) means "not set"; so does anything else that old.
_FIRST_YEAR = 1971


class AlertPayloadError(ValueError):
    """A notification refused as a whole; ``message`` says what is wrong and is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    status: Status
    labels: dict[LabelName, LabelValue] = Field(max_length=MAX_LABELS)
    annotations: dict[LabelName, AnnotationValue] = Field(
        default_factory=dict, max_length=MAX_LABELS
    )
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL", max_length=8192)
    # Alertmanager's hash of the label set (16 hex digits); older versions do not send it.
    fingerprint: str | None = Field(None, pattern=r"^[0-9A-Za-z:_.-]{1,128}$")


class _Notification(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    version: str
    status: Status
    receiver: str = Field(max_length=1000)
    group_key: str = Field("", alias="groupKey", max_length=65536)
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    group_labels: dict[LabelName, LabelValue] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[LabelName, LabelValue] = Field(default_factory=dict, alias="commonLabels")
    external_url: str = Field("", alias="externalURL", max_length=8192)
    alerts: list[_Alert] = Field(max_length=MAX_ALERTS)


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable fingerprint for an alert that came without one (Alertmanager before 0.19):
    a hash of its sorted label set, as Alertmanager's own is."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return "l" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.year < _FIRST_YEAR:
        return None
    return value.astimezone(dt.UTC)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _where(error: Mapping[str, Any]) -> str:
    """``alerts.0.startsAt``: the path of the first problem, in the payload's own names."""
    return ".".join(str(p) for p in error.get("loc", ())) or "body"


def parse_notification(body: bytes) -> AlertNotification:
    """The notification in ``body``, or `AlertPayloadError` naming the first problem."""
    try:
        data = jsonio.loads(body, parse_constant=_reject_constant)
    except jsonio.TooDeep as exc:
        raise AlertPayloadError(f"the body is refused: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AlertPayloadError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AlertPayloadError("the body must be a JSON object (an Alertmanager notification)")
    version = data.get("version")
    if version != "4":
        raise AlertPayloadError(
            f"unsupported webhook payload version {version!r}: Conveyor reads Alertmanager's "
            "version 4"
            if version is not None
            else "missing version: is this an Alertmanager webhook notification?"
        )
    try:
        parsed = _Notification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise AlertPayloadError(f"{_where(first)}: {first['msg']}") from None
    alerts = []
    for index, raw in enumerate(parsed.alerts):
        starts_at = _utc(raw.starts_at)
        if starts_at is None:
            raise AlertPayloadError(f"alerts.{index}.startsAt: the alert has no start time")
        ends_at = _utc(raw.ends_at) if raw.status == "resolved" else None
        alerts.append(
            Alert(
                fingerprint=raw.fingerprint or label_fingerprint(raw.labels),
                status=raw.status,
                labels=dict(raw.labels),
                annotations=dict(raw.annotations),
                starts_at=starts_at,
                ends_at=ends_at,
                generator_url=raw.generator_url,
            )
        )
    return AlertNotification(
        receiver=parsed.receiver,
        status=parsed.status,
        group_key=parsed.group_key,
        external_url=parsed.external_url,
        truncated_alerts=parsed.truncated_alerts,
        alerts=tuple(alerts),
    )
