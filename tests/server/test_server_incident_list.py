"""GET /api/v1/incidents as the incidents page reads it: open, resolved or all; by service and
environment; each with its attribution, deployment, release and recovery time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from tests.alertmanager import add_rollback, seed_history
from tests.server.conftest import Api, Serve

from conveyor.store.models import utcnow

MINUTE = dt.timedelta(minutes=1)


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def listed(api: Api, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    r = await api.get("/incidents", token, params=params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


def test_the_list_filters_by_status_and_tells_attribution_and_recovery(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        reader = api.token("read")

        async def open_one(**fields: Any) -> dict[str, Any]:
            r = await api.post("/incidents", {"service": "shop", **fields})
            assert r.status_code == 201, r.text
            opened: dict[str, Any] = r.json()
            return opened

        by_window = await open_one(title="checkout down", at=rfc3339(now - 30 * MINUTE))
        explicit = await open_one(
            title="new release broke",
            deployment=history.production_v2,
            at=rfc3339(now - 20 * MINUTE),
        )
        still_open = await open_one(title="slow pages", at=rfc3339(now - 2 * MINUTE))
        r = await api.post(
            f"/incidents/{by_window['id']}/resolve", {"at": rfc3339(now - 10 * MINUTE)}
        )
        assert r.status_code == 200, r.text
        # Service came back by a rollback five minutes after the explicit one opened: its
        # recovery ends there, before anyone resolved it.
        add_rollback(api.store, history, now - 15 * MINUTE)
        r = await api.post(f"/incidents/{explicit['id']}/resolve", {})
        assert r.status_code == 200, r.text

        everything = await listed(api, reader, status="all")
        # The latest opened first.
        assert [i["id"] for i in everything] == [still_open["id"], explicit["id"], by_window["id"]]
        rows = {i["id"]: i for i in everything}

        window = rows[by_window["id"]]
        assert window["status"] == "resolved"
        assert window["attribution"]["how"] == "window"
        # v1 was serving half an hour ago.
        assert (window["deployment"], window["release"]) == (
            history.production_v1,
            history.release_v1,
        )
        assert window["version"]
        assert window["recovery_seconds"] == pytest.approx(20 * 60)

        named = rows[explicit["id"]]
        assert named["attribution"]["how"] == "explicit"
        assert named["deployment"] == history.production_v2
        assert named["recovery_seconds"] == pytest.approx(5 * 60)
        assert named["restored_by"].startswith("rollback deployment")

        waiting = rows[still_open["id"]]
        assert waiting["status"] == "open"
        assert waiting["resolved_at"] is None

        assert [i["id"] for i in await listed(api, reader, status="open")] == [still_open["id"]]
        assert [i["id"] for i in await listed(api, reader, open="true")] == [still_open["id"]]
        assert [i["id"] for i in await listed(api, reader, status="resolved")] == [
            explicit["id"],
            by_window["id"],
        ]
        # No status: everything, as before the filter existed.
        assert len(await listed(api, reader)) == 3
        assert len(await listed(api, reader, limit=2)) == 2
        assert len(await listed(api, reader, environment="production")) == 3
        assert await listed(api, reader, environment="staging") == []
        assert await listed(api, reader, service="nothing") == []

        r = await api.get("/incidents", reader, params={"status": "closed"})
        assert r.status_code == 422, r.text
        assert "status" in r.json()["error"]["message"]
        r = await api.get("/incidents", reader, params={"limit": 0})
        assert r.status_code == 422, r.text

    serve(body)


def test_only_a_trigger_scope_resolves(serve: Serve) -> None:
    """The page hides Resolve from read-only viewers; the server refuses them anyway."""

    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)
        r = await api.post("/incidents", {"service": "shop", "title": "down"})
        assert r.status_code == 201, r.text
        incident_id = r.json()["id"]
        r = await api.post(f"/incidents/{incident_id}/resolve", {}, api.token("read"))
        assert r.status_code == 403, r.text
        r = await api.post(f"/incidents/{incident_id}/resolve", {}, api.token("trigger"))
        assert r.status_code == 200, r.text

    serve(body)
