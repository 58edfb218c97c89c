"""Alerts as the engine sees them: normalised from whatever sent them (Alertmanager's webhook,
conveyor.sources.alertmanager), with nothing of the payload's format left."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Alert", "AlertNotification", "Status"]

Status = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, normalised: UTC times truncated to microseconds (what the
    store keeps, so a redelivered alert compares equal to what was stored)."""

    fingerprint: str
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    generator_url: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname") or "alert"

    def label(self, *names: str) -> str | None:
        """The first of ``names`` set (non-empty) among the labels."""
        for name in names:
            value = self.labels.get(name)
            if value:
                return value
        return None

    def tag(self, name: str) -> str | None:
        """``name`` from the labels, else from the annotations (e.g. ``deployment``, which a
        rule may set either way)."""
        return self.labels.get(name) or self.annotations.get(name) or None

    @property
    def title(self) -> str:
        """What a person sees: the alert's name and its summary (or description)."""
        summary = (
            self.annotations.get("summary")
            or self.annotations.get("title")
            or self.annotations.get("description")
        )
        text = f"{self.name}: {summary.strip()}" if summary and summary.strip() else self.name
        return text if len(text) <= 500 else text[:499] + "…"

    def as_data(self) -> dict[str, Any]:
        """The alert as kept on its incident (JSON-ready)."""
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at.isoformat(),
            "generator_url": self.generator_url,
        }


@dataclass(frozen=True)
class AlertNotification:
    receiver: str
    status: Status
    group_key: str
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]
