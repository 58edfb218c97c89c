"""PagerDuty: incidents of the PagerDuty services mapped to Conveyor services.

Request (PagerDuty REST API v2, ``Authorization: Token token=<key>``, ``Accept:
application/vnd.pagerduty+json;version=2``): ``GET /incidents?since=T&until=T&service_ids[]=X
&time_zone=UTC&limit=100&offset=N`` lists the incidents created in the range (at most six
months: a first pull looks ``first_days`` back), each with ``id``, ``title``, ``status``
(``triggered``, ``acknowledged``, ``resolved``), ``created_at``, ``resolved_at`` (on newer
accounts; else ``last_status_change_at`` of a resolved one) and ``service.id``; the page says
whether ``more`` follow.

Incremental: the cursor holds where the next pull starts (base.Incidents): an incident
still open is asked for again until it is resolved, and then resolved by the import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from conveyor.connectors.base import (
    Api,
    ConnectorOptions,
    Incidents,
    Name,
    Pull,
    connector,
    text,
    time_of,
)


class PagerDutyConnector(ConnectorOptions):
    """PagerDuty incidents, by PagerDuty service."""

    services: Annotated[dict[Name, Name], Field(min_length=1)] = Field(
        description="PagerDuty service ids mapped to Conveyor services"
    )
    environment: Name | None = Field(
        "production", description="the environment its incidents are of"
    )
    api_url: str = Field("https://api.pagerduty.com", description="the API (EU: api.eu...)")
    first_days: int = Field(90, ge=1, le=180, description="how far back the first pull looks")


def api(options: PagerDutyConnector, token: str | None) -> Api:
    headers = {"Accept": "application/vnd.pagerduty+json;version=2"}
    if token:
        headers["Authorization"] = f"Token token={token}"
    return Api(options.api_url, headers)


def pull(api: Api, options: PagerDutyConnector, cursor: Mapping[str, Any]) -> Pull:
    found = Incidents.start(cursor, options.first_days)
    params = {
        "since": found.since,
        "until": text(dt.datetime.now(dt.UTC)),
        "service_ids[]": sorted(options.services),
        "time_zone": "UTC",
    }
    incidents = api.offset_items(
        "/incidents",
        params,
        "incidents",
        "PagerDuty incidents",
        lambda page: bool(page.get("more")),
    )
    for entry in incidents:
        id_ = str(entry.get("id") or "")
        service = options.services.get(str((entry.get("service") or {}).get("id")))
        if not id_ or service is None:
            continue
        created = time_of(entry.get("created_at"), f"incident {id_}: created_at")
        resolved = None
        if entry.get("status") == "resolved":
            when = entry.get("resolved_at") or entry.get("last_status_change_at")
            resolved = time_of(when, f"incident {id_}: resolved_at")
        found.add(service, id_, created, resolved, options.environment, entry.get("title"))
    return found.done()


EXTENSION = connector(
    "pagerduty",
    PagerDutyConnector,
    api,
    pull,
    "PagerDuty incidents (REST API v2), resolved in Conveyor when PagerDuty resolves them.",
    order=40,
)
