"""PATCH /api/v1/teams/{name} on the real app (SQLite and PostgreSQL), over imported history of
three services: renaming a team and adding or removing services changes what
GET /dora/portfolio?team= puts side by side; who may change a team is who may create one (an
admin limited to no service, and a signed-in browser only with its CSRF header); bad input is a
clear 4xx and the team stays as it was."""

from __future__ import annotations

import json
from typing import Any

from tests.metrics.test_dora_portfolio import history
from tests.server.conftest import API, Api, Serve, serve  # noqa: F401 (the fixture)
from tests.server.test_openapi_contract import Contract

from conveyor.metrics.imports import import_history
from conveyor.server.tokens import create_token
from conveyor.store.models import Event, Team, TeamService

QUERY = {"from": "2024-03-04", "to": "2024-03-18"}
CSRF = {"X-Conveyor-CSRF": "1"}


def members(teams: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(t["name"], t["services"]) for t in teams]


async def team_of(api: Api, services: list[str]) -> Contract:
    """Three services' imported history, and team web of ``services``; the contract caller."""
    import_history(api.store, "".join(json.dumps(r) + "\n" for r in history()))
    c = Contract(api, (await api.client.get(f"{API}/openapi.json")).json())
    await c.call("post", "/teams", 201, json={"name": "web", "services": services})
    return c


def test_a_team_is_renamed_and_its_services_changed(serve: Serve) -> None:  # noqa: F811
    async def body(api: Api) -> None:
        c = await team_of(api, ["shop"])

        added = await c.call("patch", "/teams/{name}", name="web", json={"add": ["search"]})
        assert (added["name"], added["services"]) == ("web", ["search", "shop"])
        side = await c.call("get", "/dora/portfolio", params=QUERY | {"team": "web"})
        assert [e["service"] for e in side["services"]] == ["search", "shop"]

        renamed = await c.call(
            "patch",
            "/teams/{name}",
            name="web",
            json={"name": "storefront", "add": ["ledger"], "remove": ["search"]},
        )
        assert (renamed["name"], renamed["services"]) == ("storefront", ["ledger", "shop"])
        assert members(await c.call("get", "/teams")) == [("storefront", ["ledger", "shop"])]
        side = await c.call("get", "/dora/portfolio", params=QUERY | {"team": "storefront"})
        assert side["team"] == "storefront"
        assert [e["service"] for e in side["services"]] == ["ledger", "shop"]
        await c.call("get", "/dora/portfolio", 404, params={"team": "web"})
        saved = api.count(Event, Event.type == "team.saved")
        assert saved == 3  # created, then two changes

        # The old name is free again; the new one is not.
        await c.call("post", "/teams", 201, json={"name": "web", "services": ["search"]})
        taken = await c.call("patch", "/teams/{name}", 400, name="web", json={"name": "storefront"})
        assert taken["error"]["message"] == "there is already a team named 'storefront'"

    serve(body)


def test_bad_changes_are_refused_and_nothing_is_stored(serve: Serve) -> None:  # noqa: F811
    async def body(api: Api) -> None:
        c = await team_of(api, ["shop", "search"])
        before = members(await c.call("get", "/teams"))
        events = api.count(Event)

        refusals = [
            ({"name": ""}, "a team needs a name"),
            ({"name": "   "}, "a team needs a name"),
            ({"name": "bad name!"}, "'bad name!' is not a team name"),
            ({"add": ["shopp"]}, "unknown service: shopp"),
            ({"add": ["ledger", "nope"]}, "unknown service: nope"),
            ({"add": ["shop"]}, "team 'web' already has shop"),
            ({"remove": ["ledger"]}, "team 'web' has no service ledger"),
            ({"remove": ["shop", "search"]}, "team 'web' needs at least one service"),
            ({"add": ["ledger"], "remove": ["ledger"]}, "ledger cannot be both added and removed"),
            ({}, "nothing to change"),
        ]
        for change, message in refusals:
            refused = await c.call("patch", "/teams/{name}", 400, name="web", json=change)
            assert refused["error"]["message"] == message, change
        whole = await c.call(
            "patch", "/teams/{name}", 400, name="web", json={"name": "shop-team", "add": ["nope"]}
        )
        assert whole["error"]["message"] == "unknown service: nope"
        await c.call("patch", "/teams/{name}", 422, name="web", json={"add": "ledger"})
        missing = await c.call("patch", "/teams/{name}", 404, name="nope", json={"add": ["shop"]})
        assert missing["error"]["message"] == "there is no team named 'nope'"

        assert members(await c.call("get", "/teams")) == before
        assert api.count(Team) == 1
        assert api.count(TeamService) == 2
        assert api.count(Event) == events

    serve(body)


def test_only_who_may_create_a_team_may_change_it(serve: Serve) -> None:  # noqa: F811
    async def body(api: Api) -> None:
        c = await team_of(api, ["shop"])
        change = {"add": ["search"]}

        reader = api.token("read")
        refused = await c.call("patch", "/teams/{name}", 403, token=reader, name="web", json=change)
        assert refused["error"]["message"] == "this token lacks the admin scope"
        limited = create_token(api.store, "limited", ["admin"], services=["shop"])
        scoped = await c.call("patch", "/teams/{name}", 403, token=limited, name="web", json=change)
        assert "managing teams needs a token without service limits" in scoped["error"]["message"]

        # A signed-in browser: its cookie, and the CSRF header a cross-site form cannot send.
        signed = await api.client.post(f"{API}/session", json={"token": api.admin}, headers=CSRF)
        assert signed.status_code == 200, signed.text
        url = f"{API}/teams/web"
        forged = await api.client.patch(url, json=change)
        assert forged.status_code == 403
        assert "X-Conveyor-CSRF: 1" in forged.json()["error"]["message"]
        assert members(await c.call("get", "/teams")) == [("web", ["shop"])]

        done = await api.client.patch(url, json=change, headers=CSRF)
        assert done.status_code == 200, done.text
        assert c.check("patch", "/teams/{name}", done)["services"] == ["search", "shop"]

    serve(body)
