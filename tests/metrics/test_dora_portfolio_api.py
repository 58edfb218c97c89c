"""/api/v1/teams and GET /api/v1/dora/portfolio on the real app (SQLite and PostgreSQL), over
imported history of three services: each service's figures are GET /dora's for that service,
the answers match the OpenAPI contract, writes need an admin token without service limits,
and bad input is a clear 4xx with nothing stored."""

from __future__ import annotations

import json
from typing import Any

from conveyor.metrics.imports import import_history
from conveyor.server.tokens import create_token
from conveyor.store.models import Event, Team, TeamService
from tests.metrics.test_dora_portfolio import FIVE, history
from tests.server.conftest import API, Api, Serve, serve  # noqa: F401 (the fixture)
from tests.server.test_openapi_contract import Contract

QUERY = {"from": "2024-03-04", "to": "2024-03-18"}


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (metrics[k]["value"], metrics[k]["sample_size"], metrics[k]["tier"]) for k in FIVE}


def test_teams_and_the_portfolio_through_the_api(serve: Serve) -> None:  # noqa: F811
    async def body(api: Api) -> None:
        import_history(api.store, "".join(json.dumps(r) + "\n" for r in history()))
        doc = (await api.client.get(f"{API}/openapi.json")).json()
        c = Contract(api, doc)
        reader = api.token("read")
        assert await c.call("get", "/teams", token=reader) == []

        # Writes: an admin's, and only one limited to no service.
        team = {"name": "web", "services": ["shop", "search"]}
        refused = await c.call("post", "/teams", 403, token=reader, json=team)
        assert refused["error"]["message"] == "this token lacks the admin scope"
        limited = create_token(api.store, "limited", ["admin"], services=["shop"])
        scoped = await c.call("post", "/teams", 403, token=limited, json=team)
        assert "managing teams needs a token without service limits" in scoped["error"]["message"]
        # Bad input: a clear 400 or 422, and nothing stored.
        typo = await c.call("post", "/teams", 400, json={"name": "web", "services": ["shopp"]})
        assert typo["error"]["message"] == "unknown service: shopp"
        empty = await c.call("post", "/teams", 400, json={"name": "web", "services": []})
        assert empty["error"]["message"] == "team 'web' needs at least one service"
        await c.call("post", "/teams", 422, json={"name": "web"})
        assert api.count(Team) == api.count(TeamService) == 0

        made = await c.call("post", "/teams", 201, json=team)
        assert (made["name"], made["services"]) == ("web", ["search", "shop"])
        taken = await c.call("post", "/teams", 400, json={"name": "web", "services": ["ledger"]})
        assert taken["error"]["message"] == "there is already a team named 'web'"
        listed = await c.call("get", "/teams", token=reader)
        assert [(t["name"], t["services"]) for t in listed] == [("web", ["search", "shop"])]
        assert api.count(Event, Event.type == "team.saved") == 1

        # The team side by side: each service's figures are GET /dora's for it.
        data = await c.call("get", "/dora/portfolio", token=reader, params=QUERY | {"team": "web"})
        assert [e["service"] for e in data["services"]] == ["search", "shop"]
        for entry in data["services"]:
            alone = await c.call(
                "get", "/dora", token=reader, params=QUERY | {"service": entry["service"]}
            )
            assert figures(entry["metrics"]) == figures(alone["metrics"])
            assert entry["metrics"]["work_in_progress"] == alone["metrics"]["work_in_progress"]
        counts = [e["metrics"]["deployment_frequency"]["count"] for e in data["services"]]
        assert data["aggregate"]["metrics"]["deployment_frequency"]["count"] == sum(counts)

        # Every service: the aggregate is GET /dora for all of them.
        every = await c.call("get", "/dora/portfolio", token=reader, params=QUERY)
        assert [e["service"] for e in every["services"]] == ["ledger", "search", "shop"]
        whole = await c.call("get", "/dora", token=reader, params=QUERY)
        assert figures(every["aggregate"]["metrics"]) == figures(whole["metrics"])

        missing = await c.call("get", "/dora/portfolio", 404, params={"team": "nope"})
        assert missing["error"]["message"] == "there is no team named 'nope'"
        bad = await c.call("get", "/dora/portfolio", 400, params={"tz": "Mars/Olympus"})
        assert bad["error"]["message"] == "unknown time zone 'Mars/Olympus'"

        gone = await c.call("delete", "/teams/{name}", name="web")
        assert gone["services"] == ["search", "shop"]
        await c.call("delete", "/teams/{name}", 404, name="web")
        assert await c.call("get", "/teams", token=reader) == []
        assert api.count(TeamService) == 0

    serve(body)
