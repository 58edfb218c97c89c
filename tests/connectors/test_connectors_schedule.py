"""The server's periodic step (connectors.sync.sync_due): each connector of the connectors file
runs when it is due, and one failing keeps no other from running. PagerDuty cannot run here:
a fake (tests/connectors/fake.py, a real HTTP server on 127.0.0.1) answers its documented
incidents list with stored responses (fixtures/)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from conveyor.connectors.sync import claim_turn, configured, states, sync_due
from conveyor.store import vault
from conveyor.store.db import Store
from conveyor.store.models import ConnectorState
from tests.connectors.conftest import connector, incidents
from tests.connectors.fake import PAGERDUTY_TOKEN, pagerduty, pagerduty_entry, serving


def test_each_connector_runs_when_due_and_a_failing_one_stops_no_other(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(pagerduty()) as api:
        connector(
            store,
            "pagerduty",
            "connectors:\n"
            "  broken:\n"
            "    type: pagerduty\n"
            "    api_url: http://127.0.0.1:9\n"  # nothing listens on the discard port
            "    services: {PSHOP01: shop}\n" + pagerduty_entry(api.url, "    every: 5m\n"),
        )
        vault.set_connector_secret(store, "pagerduty", "PAGERDUTY_TOKEN", PAGERDUTY_TOKEN)

        assert sync_due(store) == 2
        assert list(incidents(store)) == ["shop:PT4KHLL"]
        known = states(store)
        assert known["pagerduty"].error is None
        assert "GET http://127.0.0.1:9/incidents" in str(known["broken"].error)
        assert "connector broken: GET http://127.0.0.1:9/incidents" in caplog.text

        assert sync_due(store) == 0  # neither is due yet
        assert len(api.asked("/incidents")) == 1

        six_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
        with store.write() as w:
            w.session.execute(update(ConnectorState).values(tried_at=six_minutes_ago))
        assert sync_due(store) == 1  # pagerduty (every 5m), not broken (every 15m)
        assert len(api.asked("/incidents")) == 2


def test_two_servers_on_one_database_sync_a_connector_once_per_turn(store: Store) -> None:
    with serving(pagerduty()) as api:
        connector(
            store,
            "pagerduty",
            "connectors:\n" + pagerduty_entry(api.url),
        )
        vault.set_connector_secret(store, "pagerduty", "PAGERDUTY_TOKEN", PAGERDUTY_TOKEN)
        # The second server read the states before the first took its turn.
        before = states(store)
        assert sync_due(store) == 1
        assert not claim_turn(store, configured(store)["pagerduty"], dt.datetime.now(dt.UTC))
        assert "pagerduty" not in before
        assert len(api.asked("/incidents")) == 1
