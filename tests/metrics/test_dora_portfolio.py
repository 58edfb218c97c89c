"""DORA side by side as a user runs it: `conveyor team create|list|delete` on a real store that
holds imported history of three services, `conveyor dora --by-service` and `--team NAME`
(table and JSON), each service's row checked against `conveyor dora --service NAME` for the
same window, bad input refused with nothing stored, and the same answers through a server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.dora import show
from tests.conftest import Conveyor
from tests.serverproc import ServerProcess

WINDOW = ("--from", "2024-03-04", "--to", "2024-03-18")
FIVE = ("deployment_frequency", "lead_time", "change_failure_rate", "recovery_time", "rework_rate")
PREFIX = {"shop": "a", "search": "b", "ledger": "c"}  # commit ids are hexadecimal
START = dt.datetime(2024, 2, 19, tzinfo=dt.UTC)  # the previous two weeks, then the window


def _time(days: float, hours: float = 0) -> str:
    moment = START + dt.timedelta(days=days, hours=hours)
    return moment.isoformat().replace("+00:00", "Z")


def _last(records: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    return next(r for r in reversed(records) if r.get("id") == ident)


def history() -> list[dict[str, Any]]:
    """Three services over four weeks: shop deploys often and fails twice (one rolled back,
    one with an incident named), search deploys weekly with an incident opened after a
    deployment, ledger deploys twice and never fails."""
    records: list[dict[str, Any]] = []

    def deploy(service: str, n: int, day: float, status: str = "succeeded", **extra: Any) -> None:
        records.append(
            {
                "kind": "deployment",
                "service": service,
                "environment": "production",
                "id": f"{service}-{n}",
                "commit": f"{PREFIX[service]}{n:011x}",
                "started_at": _time(day, 10),
                "finished_at": _time(day, 10.5),
                "status": status,
                "commits": [
                    {
                        "sha": f"{PREFIX[service]}{n:011x}",
                        "committed_at": _time(day, 10 - (n % 4 + 1) * 3),
                    }
                ],
                **extra,
            }
        )

    for n in range(12):
        status = "rolled_back" if n == 8 else "succeeded"
        deploy("shop", n, 1 + n * 2.2, status)
        if n == 8:
            deploy("shop", 100, 1 + n * 2.2 + 0.05, rollback_of="shop-8")
    for n in range(4):
        deploy("search", n, 3 + n * 7)
    deploy("ledger", 0, 16)
    deploy("ledger", 1, 24)
    # search also serves a second production environment: its commits count once.
    for n in (2, 3):
        twin = dict(_last(records, f"search-{n}"))
        twin |= {"id": f"search-eu-{n}", "environment": "production-eu", "tier": "production"}
        twin["finished_at"] = _time(3 + n * 7, 11)
        records.append(twin)
    records.append(
        {
            "kind": "incident",
            "service": "shop",
            "id": "INC-7",
            "opened_at": _time(1 + 10 * 2.2, 12),
            "resolved_at": _time(1 + 10 * 2.2, 15),
            "environment": "production",
            "deployment": "shop-10",
        }
    )
    records.append(
        {
            "kind": "incident",
            "service": "search",
            "id": "INC-9",
            "opened_at": _time(17, 14),
            "resolved_at": _time(
                17,
                16,
            ),
            "environment": "production",
        }
    )
    return records


@pytest.fixture
def imported(conveyor: Conveyor, tmp_path: Path) -> Conveyor:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history()))
    conveyor("import", str(path), check=True)
    return conveyor


def figures(entry: dict[str, Any]) -> dict[str, Any]:
    """Each of the five figures' value, sample size and tier."""
    return {
        k: (
            entry["metrics"][k]["value"],
            entry["metrics"][k]["sample_size"],
            entry["metrics"][k]["tier"],
        )
        for k in FIVE
    }


def test_each_service_side_by_side_is_its_own_report(imported: Conveyor) -> None:
    data = imported("dora", "--by-service", *WINDOW, "--json", check=True).json()
    assert data["team"] is None
    table = imported("dora", "--by-service", *WINDOW, check=True).stdout.splitlines()
    assert table[0].startswith("DORA side by side · all services (3) · production · 2024-03-04")
    assert [line.split()[0] for line in table[4:]] == ["ledger", "search", "shop", "="]
    assert [e["service"] for e in data["services"]] == ["ledger", "search", "shop"]
    assert data["scope"]["services"] == ["ledger", "search", "shop"]
    for entry in data["services"]:
        alone = imported("dora", "--service", entry["service"], *WINDOW, "--json", check=True)
        assert figures(entry) == figures(alone.json()), entry["service"]
        assert entry["metrics"]["batch_size"] == alone.json()["metrics"]["batch_size"]
    # The aggregate of every service is `conveyor dora` for all of them.
    everything = imported("dora", *WINDOW, "--json", check=True).json()
    assert figures(data["aggregate"]) == figures(everything)
    # The services differ, or the comparison above would prove little.
    ledger, search, shop = data["services"]
    assert shop["metrics"]["change_failure_rate"]["value"] > 0
    assert ledger["metrics"]["change_failure_rate"]["value"] == 0
    assert figures(shop) != figures(search)
    # A row's tier is the lowest of its figures' tiers.
    order = [t["name"] for t in data["tiers"]["tiers"]]
    tiers = [shop["metrics"][k]["tier"] for k in FIVE if shop["metrics"][k]["tier"]]
    assert shop["tier"] == max(tiers, key=order.index)


def test_a_team_is_its_services_together(imported: Conveyor) -> None:
    made = imported("team", "create", "web", "--service", "shop", "--service", "search")
    assert made.returncode == 0, made.output
    assert "team web: search, shop" in made.stdout
    listed = imported("team", "list", "--json", check=True).json()
    assert [(t["name"], t["services"]) for t in listed] == [("web", ["search", "shop"])]
    table_of_teams = imported("team", "list", check=True).stdout.splitlines()
    assert table_of_teams[0].split() == ["team", "services", "created", "by"]
    assert table_of_teams[1].startswith("web   search, shop  ")

    data = imported("dora", "--team", "web", *WINDOW, "--json", check=True).json()
    assert data["team"] == "web"
    assert [e["service"] for e in data["services"]] == ["search", "shop"]
    members = [
        imported("dora", "--service", name, *WINDOW, "--json", check=True).json()
        for name in ("search", "shop")
    ]
    for entry, alone in zip(data["services"], members, strict=True):
        assert figures(entry) == figures(alone)
    # The team's counts are its services' counts added up (ledger left out).
    team = data["aggregate"]["metrics"]

    def total(key: str, detail: str) -> int:
        return sum(int(m["metrics"][key][detail]) for m in members)

    assert team["deployment_frequency"]["count"] == total("deployment_frequency", "count")
    assert team["change_failure_rate"]["failed"] == total("change_failure_rate", "failed")
    assert team["change_failure_rate"]["deployments"] == total("change_failure_rate", "deployments")
    assert team["lead_time"]["sample_size"] == total("lead_time", "sample_size")
    assert team["rework_rate"]["unplanned"] == total("rework_rate", "unplanned")
    everything = imported("dora", *WINDOW, "--json", check=True).json()["metrics"]
    assert team["deployment_frequency"]["count"] < everything["deployment_frequency"]["count"]

    # The table: one row per service and the team's last, written as `conveyor dora` writes
    # each figure.
    table = imported("dora", "--team", "web", *WINDOW, check=True).stdout.splitlines()
    assert "team web (2 services)" in table[0]
    rows = [line.split() for line in table if line.startswith(("search", "shop", "= team"))]
    assert [r[0] for r in rows] == ["search", "shop", "="]
    for line, entry in zip(
        [line for line in table if line.startswith(("search", "shop", "= team"))],
        [*data["services"], data["aggregate"]],
        strict=True,
    ):
        for key in FIVE:
            assert show(key, entry["metrics"][key]["value"]) in line
        assert line.rstrip().endswith(entry["tier"] or "-")

    gone = imported("team", "delete", "web", check=True)
    assert "team web deleted" in gone.stdout
    assert imported("team", "list", "--json", check=True).json() == []


def test_bad_input_is_refused_and_nothing_is_stored(imported: Conveyor) -> None:
    unknown = imported("team", "create", "web", "--service", "shop", "--service", "shopp")
    assert unknown.returncode == 1
    assert "error: unknown service: shopp" in unknown.stderr
    assert imported("team", "list", "--json", check=True).json() == []
    badname = imported("team", "create", "web team", "--service", "shop")
    assert badname.returncode == 1
    assert "'web team' is not a team name" in badname.stderr
    none = imported("team", "create", "web")
    assert none.returncode == 2
    assert "--service" in none.stderr
    imported("team", "create", "web", "--service", "shop", check=True)
    again = imported("team", "create", "web", "--service", "search")
    assert again.returncode == 1
    assert "there is already a team named 'web'" in again.stderr
    assert imported("team", "list", "--json", check=True).json()[0]["services"] == ["shop"]

    missing = imported("dora", "--team", "nope", *WINDOW)
    assert missing.returncode == 1
    assert "there is no team named 'nope'" in missing.stderr
    both = imported("dora", "--by-service", "--service", "shop", *WINDOW)
    assert both.returncode == 2
    assert "--service is for one report" in both.stderr
    explained = imported("dora", "--team", "web", "--explain", *WINDOW)
    assert explained.returncode == 2
    assert imported("team", "delete", "nope").returncode == 1


@pytest.mark.integration
def test_through_a_server_teams_and_the_portfolio_are_the_same(
    tmp_path: Path, conveyor: Conveyor
) -> None:
    server = ServerProcess(tmp_path / "server-home")
    server.home.mkdir(parents=True)
    local = Conveyor(home=server.home, cwd=conveyor.cwd)
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history()))
    local("import", str(path), check=True)
    admin = server.token("admin", "admin")
    reader = server.token("reader", "read")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=reader)
        refused = conveyor("team", "create", "web", "--service", "shop")
        assert refused.returncode == 1
        assert "this token lacks the admin scope" in refused.stderr
        conveyor.extra_env["CONVEYOR_TOKEN"] = admin
        unknown = conveyor("team", "create", "web", "--service", "nope")
        assert "error: unknown service: nope" in unknown.stderr
        conveyor("team", "create", "web", "--service", "shop,ledger", check=True)
        conveyor.extra_env["CONVEYOR_TOKEN"] = reader
        listed = conveyor("team", "list", "--json", check=True).json()
        assert [(t["name"], t["services"]) for t in listed] == [("web", ["ledger", "shop"])]
        remote = conveyor("dora", "--team", "web", *WINDOW, "--json", check=True).stdout
        assert remote == local("dora", "--team", "web", *WINDOW, "--json", check=True).stdout
        table = conveyor("dora", "--by-service", *WINDOW, check=True).stdout
        assert table == local("dora", "--by-service", *WINDOW, check=True).stdout
        conveyor.extra_env["CONVEYOR_TOKEN"] = admin
        conveyor("team", "delete", "web", check=True)
        assert local("team", "list", "--json", check=True).json() == []
    finally:
        server.stop()
