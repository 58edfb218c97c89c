"""The PagerDuty and Opsgenie connectors against fake APIs (tests/connectors/fake.py): neither
service can run here, so a real HTTP server on 127.0.0.1 answers the documented list requests
(PagerDuty REST API v2 ``GET /incidents``, Opsgenie Alert API v2 ``GET /v2/alerts``) with
stored responses shaped as their references document them, and checks the authentication
header, the offset pagination and the incremental ``since`` / ``createdAt`` filters."""

from __future__ import annotations

from typing import Any

from conveyor.connectors.sync import states, sync
from conveyor.store import vault
from conveyor.store.db import Store
from tests.connectors.conftest import at, connector, incidents
from tests.connectors.fake import PAGERDUTY_TOKEN, FakeApi, Reply, Request, fixture, serving

PD_TOKEN = PAGERDUTY_TOKEN
OG_KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"


def test_pagerduty_incidents_are_imported_and_resolved_when_pagerduty_resolves_them(
    store: Store,
) -> None:
    later = {"now": False}
    api = FakeApi(
        ("Authorization", f"Token token={PD_TOKEN}"),
        {"error": {"message": "Unauthorized", "code": 2006}},
    )

    def listing(request: Request) -> Reply:
        assert request.headers["accept"] == "application/vnd.pagerduty+json;version=2"
        assert request.query["service_ids[]"] == ["PBILL02", "PSHOP01"]
        assert request.param("limit") == "100"
        if later["now"]:
            return Reply(fixture("pagerduty/incidents_later.json"))
        page = "page2" if request.param("offset") == "100" else "page1"
        return Reply(fixture(f"pagerduty/incidents_{page}.json"))

    api.route("/incidents", listing)
    with serving(api):
        pd = connector(
            store,
            "pagerduty",
            "connectors:\n"
            "  pagerduty:\n"
            "    type: pagerduty\n"
            f"    api_url: {api.url}\n"
            "    token_secret: PAGERDUTY_TOKEN\n"
            "    services: {PSHOP01: shop, PBILL02: billing}\n",
        )
        vault.set_connector_secret(store, "pagerduty", "PAGERDUTY_TOKEN", PD_TOKEN)

        first = sync(store, pd)
        assert first.imported["incidents"]["added"] == 3
        assert [r.param("offset") for r in api.asked("/incidents")] == ["0", "100"]
        assert incidents(store) == {
            "shop:PT4KHLK": ("resolved", at("2024-05-01T15:10:00Z"), at("2024-05-01T16:00:00Z")),
            "shop:PT4KHLL": ("open", at("2024-05-02T09:30:00Z"), None),
            "billing:PT4KHLM": (
                "resolved",
                at("2024-05-02T10:00:00Z"),
                at("2024-05-02T10:30:00Z"),
            ),
        }
        # The open incident holds the cursor back: asked for again until it is resolved.
        assert states(store)["pagerduty"].cursor["since"] == "2024-05-02T09:30:00Z"

        later["now"] = True
        second = sync(store, pd)
        assert api.asked("/incidents")[-1].param("since") == "2024-05-02T09:30:00Z"
        assert second.imported["incidents"]["resolved"] == 1
        assert incidents(store)["shop:PT4KHLL"] == (
            "resolved",
            at("2024-05-02T09:30:00Z"),
            at("2024-05-02T11:00:00Z"),
        )
        again = sync(store, pd)
        assert again.imported["incidents"] == {"added": 0, "present": 1, "resolved": 0}


def test_opsgenie_alerts_are_incidents_closed_when_opsgenie_closes_them(store: Store) -> None:
    answers: list[str] = ["first"]
    asked: list[dict[str, Any]] = []
    api = FakeApi(
        ("Authorization", f"GenieKey {OG_KEY}"),
        {"message": "Could not authenticate", "took": 0.0, "requestId": "d2b9c3b0"},
    )

    def listing(request: Request) -> Reply:
        asked.append({k: v[0] for k, v in request.query.items()})
        return Reply(fixture(f"opsgenie/alerts_{answers[-1]}.json"))

    api.route("/v2/alerts", listing)
    with serving(api):
        og = connector(
            store,
            "opsgenie",
            "connectors:\n"
            "  opsgenie:\n"
            "    type: opsgenie\n"
            "    service: shop\n"
            "    query: 'tag:shop'\n"
            f"    api_url: {api.url}\n"
            "    token_secret: OPSGENIE_KEY\n",
        )
        vault.set_connector_secret(store, "opsgenie", "OPSGENIE_KEY", OG_KEY)

        first = sync(store, og)
        assert first.imported["incidents"]["added"] == 2
        assert asked[0]["query"].startswith("(tag:shop) AND createdAt>=")
        assert (asked[0]["sort"], asked[0]["order"], asked[0]["offset"]) == (
            "createdAt",
            "asc",
            "0",
        )
        found = incidents(store)
        # Closed 2,700,000 ms (45 minutes) after it was created (report.closeTime).
        assert found["shop:70413a06-38d6-4c85-92b8-5ebc900d42e2"] == (
            "resolved",
            at("2024-05-01T15:10:00Z"),
            at("2024-05-01T15:55:00Z"),
        )
        assert found["shop:8bd54a3b-6d8f-4b18-b7f9-d2f4b2e0c9a1"][0] == "open"

        answers.append("later")
        second = sync(store, og)
        # From the open alert's creation, in epoch milliseconds.
        assert asked[1]["query"] == "(tag:shop) AND createdAt>=1714642200000"
        assert second.imported["incidents"]["resolved"] == 1
        assert incidents(store)["shop:8bd54a3b-6d8f-4b18-b7f9-d2f4b2e0c9a1"] == (
            "resolved",
            at("2024-05-02T09:30:00Z"),
            at("2024-05-02T10:45:00Z"),
        )
