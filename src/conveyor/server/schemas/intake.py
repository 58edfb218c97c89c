"""What comes in: the change webhooks and hook tokens (server/hooks.py) and history import
(server/imports.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from conveyor.server.schemas.common import Schema

__all__ = [
    "ConnectorListed",
    "ConnectorSecretSet",
    "ConnectorSynced",
    "DeploymentTaken",
    "HookAnswer",
    "HookChange",
    "HookOutcome",
    "HookToken",
    "ImportCounts",
    "ImportIncidents",
    "ImportSummary",
]


class ImportCounts(Schema):
    added: int
    present: int = Field(description="Already in the store (the import is idempotent).")
    changes_added: int


class ImportIncidents(Schema):
    added: int
    present: int
    resolved: int


class ImportSummary(Schema):
    records: int
    dry_run: bool = Field(description="Nothing was stored (?dry_run=true).")
    deployments: ImportCounts
    incidents: ImportIncidents
    ignored: dict[str, int] = Field(description="Records left out, by reason.")
    duplicates: int
    warnings: list[str]
    seconds: float = Field(description="How long the import took.")


class HookAnswer(Schema):
    """A change webhook's answer: ``accepted`` (202, recorded), ``duplicate`` (200, the git
    hook's retry of a change already received) or ``ignored`` (202, not a push)."""

    status: Literal["accepted", "duplicate", "ignored"]
    delivery: str | None = Field(None, description="The delivery's id; left out when ignored.")
    reason: str | None = Field(None, description="Why it was ignored; only then.")


class HookOutcome(Schema):
    """What became of a change the git hook delivered, for one service built from it."""

    service: str
    status: Literal["received", "claimed", "queued", "ignored"] = Field(
        description="received/claimed: not turned into a run yet; queued: run ``run`` builds "
        "it; ignored: not built, ``reason`` says why."
    )
    run: int | None = Field(description="The run building it, once queued.")
    reason: str | None = Field(description="Why it was not built; only when ignored.")


class HookChange(Schema):
    """GET /hooks/git/{delivery}: the runs a hook's change started, for the hook to print."""

    delivery: str
    outcomes: list[HookOutcome]


class HookToken(Schema):
    token: str = Field(description="The secret: shown once.")
    name: str
    services: list[str] = Field(description="The services it may trigger.")
    revoked: str | None = Field(description="The name of the hook token it replaced, if any.")


class DeploymentTaken(Schema):
    """A deployment received by the live intake (server/deployment_intake.py)."""

    status: Literal["created", "present"] = Field(
        description="created: recorded now (201); present: received before (200)."
    )
    service: str
    environment: str
    id: str = Field(description="Its id in the system that made it.")
    result: Literal["succeeded", "failed", "rolled_back"]
    changes: int = Field(description="Commits recorded with it (0 when present).")


class ConnectorListed(Schema):
    name: str
    type: str = Field(description="github, gitlab, argocd, pagerduty, opsgenie, or a plug-in's.")
    every_seconds: float = Field(description="How often the server syncs it.")
    token_secret: str | None = Field(description="The name of the secret it reads; no value.")
    synced_at: datetime | None = Field(description="The last sync that succeeded.")
    tried_at: datetime | None = Field(description="The last sync, whatever its outcome.")
    error: str | None = Field(description="Why the last sync failed; null if it succeeded.")
    last_import: ImportSummary | None = Field(description="What its last sync imported.")


class ConnectorSynced(Schema):
    connector: str
    pulled: int = Field(description="Records found since the connector's cursor.")
    skipped: int = Field(description="Left out: environments not mapped, cancelled runs...")
    requests: int = Field(description="Requests made to the tool.")
    import_: ImportSummary = Field(alias="import", description="What it imported.")


class ConnectorSecretSet(Schema):
    connector: str
    name: str
    created: bool = Field(description="false: an existing token was replaced.")
