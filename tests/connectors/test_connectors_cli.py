"""`conveyor connectors list|sync|secret` with the real command, against a fake PagerDuty API
(tests/connectors/fake.py: PagerDuty cannot run here; a real HTTP server on 127.0.0.1 answers
its documented incidents list with stored responses (fixtures/) and checks the token)."""

from __future__ import annotations

import subprocess

from tests.conftest import Conveyor
from tests.connectors.fake import PAGERDUTY_TOKEN, pagerduty, pagerduty_entry, serving

TOKEN = PAGERDUTY_TOKEN


def configure(conveyor: Conveyor, text: str) -> None:
    conveyor.home.mkdir(parents=True, exist_ok=True)
    (conveyor.home / "connectors.yml").write_text(text, encoding="utf-8")


def set_token(conveyor: Conveyor, *args: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        conveyor.argv("connectors", "secret", *args),
        input=value + "\n",
        env=conveyor.env(),
        cwd=conveyor.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_team_configures_a_connector_sets_its_token_and_syncs_it(conveyor: Conveyor) -> None:
    with serving(pagerduty()) as api:
        configure(
            conveyor,
            "connectors:\n" + pagerduty_entry(api.url, "    every: 5m\n"),
        )
        listed = conveyor("connectors", "list", check=True)
        assert "pagerduty" in listed.stdout
        assert "never synced" in listed.stdout

        unset = conveyor("connectors", "sync", "pagerduty")
        assert unset.returncode != 0
        assert "its secret PAGERDUTY_TOKEN is not set" in unset.output
        assert "conveyor connectors secret pagerduty PAGERDUTY_TOKEN" in unset.output

        stored = set_token(conveyor, "pagerduty", "PAGERDUTY_TOKEN", value=TOKEN)
        assert stored.returncode == 0, stored.stderr
        assert "secret PAGERDUTY_TOKEN set for connector pagerduty" in stored.stdout

        synced = conveyor("connectors", "sync", "pagerduty", check=True)
        assert "incidents:   1 new, 0 already present" in synced.stdout
        again = conveyor("connectors", "sync", "pagerduty", "--json", check=True).json()
        assert again["import"]["incidents"] == {"added": 0, "present": 1, "resolved": 0}

        after = conveyor("connectors", "list", "--json", check=True).json()
        assert after[0]["name"] == "pagerduty"
        assert after[0]["error"] is None
        assert after[0]["every_seconds"] == 300
        # The token never shows: not in the listing, not among the service's secrets.
        assert TOKEN not in str(after)
        assert "PAGERDUTY_TOKEN" not in conveyor("secret", "list", "shop", check=True).stdout


def test_a_mistake_in_the_connectors_file_names_the_connector_and_field(
    conveyor: Conveyor,
) -> None:
    configure(
        conveyor,
        "connectors:\n  shop-github:\n    type: github\n    service: shop\n    every: 10s\n",
    )
    too_often = conveyor("connectors", "list")
    assert too_often.returncode != 0
    assert "connectors.shop-github.every: at least 60s between syncs" in too_often.output

    configure(conveyor, "connectors:\n  shop-github:\n    type: github\n    service: shop\n")
    missing = conveyor("connectors", "list")
    assert "connectors.shop-github.repository: Field required" in missing.output

    configure(conveyor, "connectors:\n  shop:\n    type: jenkins\n")
    unknown = conveyor("connectors", "sync", "shop")
    assert "connectors.shop.type: 'jenkins' is not a connector type" in unknown.output
    assert "github, gitlab, argocd, pagerduty, opsgenie" in unknown.output
