"""`conveyor team add|remove|rename` as a user runs them, on a real store holding imported history
of three services, and through a real `conveyor server` (the same PATCH /teams the web UI's
Teams page calls): the team's portfolio follows each change, and a refused change says why and
leaves the team as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import Conveyor
from tests.metrics.test_dora_portfolio import WINDOW, history
from tests.serverproc import ServerProcess


def import_three(conveyor: Conveyor, tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history()))
    conveyor("import", str(path), check=True)


def teams(conveyor: Conveyor) -> list[tuple[str, list[str]]]:
    listed = conveyor("team", "list", "--json", check=True).json()
    return [(t["name"], t["services"]) for t in listed]


def test_a_team_is_changed_in_place(conveyor: Conveyor, tmp_path: Path) -> None:
    import_three(conveyor, tmp_path)
    conveyor("team", "create", "web", "--service", "shop", check=True)
    added = conveyor("team", "add", "web", "search", "ledger", check=True)
    assert added.stdout.strip() == "team web: ledger, search, shop"
    removed = conveyor("team", "remove", "web", "ledger", check=True)
    assert removed.stdout.strip() == "team web: search, shop"
    renamed = conveyor("team", "rename", "web", "storefront", check=True)
    assert renamed.stdout.strip() == "team storefront: search, shop"
    assert teams(conveyor) == [("storefront", ["search", "shop"])]
    data = conveyor("dora", "--team", "storefront", *WINDOW, "--json", check=True).json()
    assert [e["service"] for e in data["services"]] == ["search", "shop"]

    refusals = [
        (("add", "storefront", "shopp"), "error: unknown service: shopp"),
        (("add", "storefront", "shop"), "error: team 'storefront' already has shop"),
        (("remove", "storefront", "ledger"), "error: team 'storefront' has no service ledger"),
        (("remove", "storefront", "shop,search"), "team 'storefront' needs at least one service"),
        (("rename", "storefront", "bad name"), "error: 'bad name' is not a team name"),
        (("rename", "nope", "other"), "error: there is no team named 'nope'"),
    ]
    for args, message in refusals:
        refused = conveyor("team", *args)
        assert refused.returncode == 1, args
        assert message in refused.stderr, refused.stderr
    assert teams(conveyor) == [("storefront", ["search", "shop"])]


@pytest.mark.integration
def test_through_a_server_changes_take_an_admin(tmp_path: Path, conveyor: Conveyor) -> None:
    server = ServerProcess(tmp_path / "server-home")
    server.home.mkdir(parents=True)
    local = Conveyor(home=server.home, cwd=conveyor.cwd)
    import_three(local, tmp_path)
    local("team", "create", "web", "--service", "shop", check=True)
    admin = server.token("admin", "admin")
    reader = server.token("reader", "read")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=reader)
        refused = conveyor("team", "add", "web", "search")
        assert refused.returncode == 1
        assert "this token lacks the admin scope" in refused.stderr
        conveyor.extra_env["CONVEYOR_TOKEN"] = admin
        conveyor("team", "add", "web", "search", check=True)
        conveyor("team", "rename", "web", "storefront", check=True)
        unknown = conveyor("team", "add", "storefront", "nope")
        assert "error: unknown service: nope" in unknown.stderr
        assert teams(local) == [("storefront", ["search", "shop"])]
    finally:
        server.stop()
