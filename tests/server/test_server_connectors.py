"""The connectors in a running server (in-process, real store): the server syncs each
connector of its connectors file on its own, and the API (admin) lists them, sets a token and
syncs one now. PagerDuty cannot run here: a fake (tests/connectors/fake.py, a real HTTP server
on 127.0.0.1) answers its documented incidents list with a stored response (fixtures/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.connectors.fake import PAGERDUTY_TOKEN, pagerduty, pagerduty_entry, serving
from tests.server.conftest import Api, Serve, until

from conveyor.server.tokens import create_token

TOKEN = PAGERDUTY_TOKEN


def test_the_server_runs_its_connectors_and_the_api_drives_them(
    serve: Serve, tmp_path: Path
) -> None:
    api_fake = pagerduty()

    async def body(api: Api) -> None:
        async def tried() -> list[dict[str, Any]] | None:
            listed: list[dict[str, Any]] = (await api.get("/connectors")).json()
            return listed if listed[0]["tried_at"] else None

        # At start the server syncs it on its own; its token is not set yet.
        [first] = await until(tried, what="the server's first sync")
        assert first["name"] == "pagerduty"
        assert "its secret PAGERDUTY_TOKEN is not set" in first["error"]
        assert first["token_secret"] == "PAGERDUTY_TOKEN"

        put = await api.client.put(
            "/api/v1/connectors/pagerduty/secrets/PAGERDUTY_TOKEN",
            json={"value": TOKEN},
            headers=api.auth(api.admin),
        )
        assert put.status_code == 200, put.text
        assert put.json() == {"connector": "pagerduty", "name": "PAGERDUTY_TOKEN", "created": True}

        synced = await api.post("/connectors/pagerduty/sync")
        assert synced.status_code == 200, synced.text
        assert synced.json()["import"]["incidents"]["added"] == 1
        [after] = (await api.get("/connectors")).json()
        assert after["error"] is None
        assert after["last_import"]["incidents"]["added"] == 1
        assert TOKEN not in str(after)

        unknown = await api.post("/connectors/jenkins/sync")
        assert unknown.status_code == 404
        trigger = create_token(api.store, "cd", ["trigger"])
        assert (await api.post("/connectors/pagerduty/sync", token=trigger)).status_code == 403
        assert (await api.get("/connectors", token=trigger)).status_code == 403

    with serving(api_fake):
        home = tmp_path / "home"
        home.mkdir(parents=True, exist_ok=True)
        entry = pagerduty_entry(api_fake.url)
        (home / "connectors.yml").write_text("connectors:\n" + entry, encoding="utf-8")
        serve(body)
