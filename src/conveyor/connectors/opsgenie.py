"""Opsgenie: alerts matching a search query, as incidents of one Conveyor service.

Request (Opsgenie Alert API v2, ``Authorization: GenieKey <key>``): ``GET /v2/alerts?query=Q
&sort=createdAt&order=asc&limit=100&offset=N`` lists alerts (``data``), each with ``id``,
``message``, ``status`` (``open``, ``closed``), ``createdAt``, ``updatedAt`` and ``report``
(``closeTime``: milliseconds from creation to close); ``paging.next`` is there while more
follow. The connector adds ``createdAt>=<epoch milliseconds>`` to the query.

Incremental: the cursor holds where the next pull starts (base.Incidents): an alert
still open is asked for again until it is closed, and then resolved by the import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from conveyor.connectors.base import (
    Api,
    ConnectorOptions,
    Incidents,
    Name,
    Pull,
    connector,
    time_of,
)


class OpsgenieConnector(ConnectorOptions):
    """Opsgenie alerts (a search query) as the incidents of one service."""

    service: Name = Field(description="the Conveyor service the alerts are incidents of")
    query: str = Field("", max_length=1000, description="an Opsgenie search query, e.g. tag:shop")
    environment: Name | None = Field("production", description="the environment of its incidents")
    api_url: str = Field("https://api.opsgenie.com", description="EU: https://api.eu.opsgenie.com")
    first_days: int = Field(90, ge=1, description="how far back the first pull looks")


def api(options: OpsgenieConnector, token: str | None) -> Api:
    return Api(options.api_url, {"Authorization": f"GenieKey {token}"} if token else {})


def pull(api: Api, options: OpsgenieConnector, cursor: Mapping[str, Any]) -> Pull:
    found = Incidents.start(cursor, options.first_days)
    millis = int(time_of(found.since, "cursor").timestamp() * 1000)
    query = f"createdAt>={millis}"
    if options.query.strip():
        query = f"({options.query.strip()}) AND {query}"
    params = {"query": query, "sort": "createdAt", "order": "asc"}
    alerts = api.offset_items(
        "/v2/alerts",
        params,
        "data",
        "Opsgenie alerts",
        lambda page: bool((page.get("paging") or {}).get("next")),
    )
    for alert in alerts:
        id_ = str(alert.get("id") or "")
        if not id_:
            continue
        created = time_of(alert.get("createdAt"), f"alert {id_}: createdAt")
        resolved = None
        if alert.get("status") == "closed":
            close_ms = (alert.get("report") or {}).get("closeTime")
            resolved = (
                created + dt.timedelta(milliseconds=close_ms)
                if isinstance(close_ms, int)
                else time_of(alert.get("updatedAt"), f"alert {id_}: updatedAt")
            )
        message = alert.get("message")
        found.add(options.service, id_, created, resolved, options.environment, message)
    return found.done()


EXTENSION = connector(
    "opsgenie",
    OpsgenieConnector,
    api,
    pull,
    "Opsgenie alerts (Alert API v2) as incidents, resolved when Opsgenie closes them.",
    order=50,
)
