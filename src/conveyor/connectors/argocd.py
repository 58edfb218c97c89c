"""Argo CD: an application's deployment history (each successful sync) and its last sync
operation when that failed.

Request (Argo CD API, ``Authorization: Bearer <token>``): ``GET /api/v1/applications/{name}``
answers the Application; ``status.history`` lists its successful syncs (``id``, ``revision``,
``deployStartedAt``, ``deployedAt``), and ``status.operationState`` the last operation
(``phase`` ``Succeeded``, ``Failed``, ``Error`` or still ``Running``, ``startedAt``,
``finishedAt``, ``syncResult.revision``). Argo CD keeps the last ``revisionHistoryLimit`` (10)
syncs only: a connector synced at least that often loses none.

An application with several sources (``spec.sources``) has ``revisions``, one per source, and
an empty ``revision``, in its history and its sync result alike: the first of those that is a
commit id is the one recorded.

Argo CD knows revisions, not when their commits were made: its deployments bring no commits
(``commits: []``), so they count in deployment frequency, change failure rate and recovery,
not in lead time. Revisions that are not commit ids (a Helm chart's version) are skipped.

Incremental: the cursor holds the newest history id imported and the start of the newest
failed operation imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import Field

from conveyor.connectors.base import (
    Api,
    ConnectorError,
    ConnectorOptions,
    Name,
    Pull,
    connector,
    deployment_record,
    items,
    text,
    time_of,
)

_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
FAILED = {"Failed", "Error"}


class ArgoCDConnector(ConnectorOptions):
    """Argo CD application history: one application, deployed to one environment."""

    application: Name = Field(description="the Application's name")
    service: Name = Field(description="the Conveyor service it deploys")
    environment: Name = Field(description="the environment it deploys to")
    api_url: str = Field(description="the Argo CD server, e.g. https://argocd.example.com")
    app_namespace: Name | None = Field(
        None, description="the Application's namespace, if not the default"
    )


def api(options: ArgoCDConnector, token: str | None) -> Api:
    return Api(options.api_url, {"Authorization": f"Bearer {token}"} if token else {})


def pull(api: Api, options: ArgoCDConnector, cursor: Mapping[str, Any]) -> Pull:
    found = Pull(cursor=dict(cursor))
    params = {"appNamespace": options.app_namespace} if options.app_namespace else {}
    app = api.get(f"/api/v1/applications/{quote(options.application, safe='')}", params)[0]
    if not isinstance(app, dict) or not isinstance(app.get("status"), dict):
        raise ConnectorError(f"Argo CD application {options.application}: no status")
    status = app["status"]
    environment = found.environment(options, options.environment)
    if environment is None:
        return found
    newest = int(cursor.get("history") or 0)
    history = items(status.get("history") or [], None, "Argo CD history")
    for entry in sorted(history, key=lambda h: int(h.get("id") or 0)):
        number = int(entry.get("id") or 0)
        if number <= int(cursor.get("history") or 0):
            continue
        newest = max(newest, number)
        revision = _revision(entry)
        if not revision:
            found.skipped += 1
            continue
        deployed = time_of(entry.get("deployedAt"), f"history {number}: deployedAt")
        started = time_of(entry.get("deployStartedAt") or entry.get("deployedAt"), "started")
        found.records.append(
            deployment_record(
                options.service,
                environment,
                f"history-{number}",
                revision.lower(),
                started,
                deployed,
                "succeeded",
            )
            | {"commits": []}
        )
    found.cursor["history"] = newest
    operation = status.get("operationState") or {}
    if operation.get("phase") in FAILED:
        _failed(options, environment, operation, found)
    return found


def _failed(
    options: ArgoCDConnector, environment: str, operation: dict[str, Any], found: Pull
) -> None:
    started = time_of(operation.get("startedAt"), "operationState.startedAt")
    if found.cursor.get("operation") == text(started):
        return
    found.cursor["operation"] = text(started)
    revision = _revision(operation.get("syncResult") or {}) or _revision(
        (operation.get("operation") or {}).get("sync") or {}
    )
    if not revision:
        found.skipped += 1
        return
    finished = time_of(operation.get("finishedAt") or operation.get("startedAt"), "finishedAt")
    found.records.append(
        deployment_record(
            options.service,
            environment,
            f"operation-{text(started)}",
            revision.lower(),
            started,
            finished,
            "failed",
        )
    )


def _revision(synced: Mapping[str, Any]) -> str:
    """The commit id a history entry or sync was of: its ``revision``, or for an application
    with several sources the first of its ``revisions`` that is a commit id; "" if none is."""
    listed = synced.get("revisions")
    candidates = [synced.get("revision"), *(listed if isinstance(listed, list) else [])]
    return next((str(c) for c in candidates if isinstance(c, str) and _SHA.fullmatch(c)), "")


EXTENSION = connector(
    "argocd",
    ArgoCDConnector,
    api,
    pull,
    "Argo CD application history (its successful syncs) and failed sync operations.",
    order=30,
)
