"""`conveyor dora` as a user runs it: JSON, the table with tiers and trends, CSV, --explain,
bad options, and the same output through a server (CONVEYOR_URL)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conveyor.facts import DeploymentFact
from conveyor.store.db import Settings, open_store
from conveyor.store.facts import write_fact
from tests.conftest import Conveyor
from tests.metrics import at, commit, deployment
from tests.serverproc import ServerProcess

WINDOW = ("--from", "2024-01-01", "--to", "2024-01-15")


def history() -> list[DeploymentFact]:
    """The rollback scenario (test_dora_scenarios.test_a_rollback), plus one deployment in the
    previous two weeks for the trend."""
    return [
        deployment("d0", at(12, 27, 12, year=2023), commit("z", at(12, 27, 8, year=2023))),
        deployment("d1", at(1, 2, 10), commit("a", at(1, 2, 8))),
        deployment(
            "d2",
            at(1, 3, 10, 15),
            started=at(1, 3, 10),
            result="rolled_back",
            failed_at=at(1, 3, 10, 5),
        ),
        deployment(
            "r1", at(1, 3, 10, 15), started=at(1, 3, 10, 6), kind="rollback", rollback_of="d2"
        ),
        deployment("d3", at(1, 5, 12), commit("b", at(1, 3, 9)), commit("c", at(1, 5, 11))),
    ]


def store_facts(home: Path) -> None:
    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    try:
        with store.write() as w:
            for fact in history():
                write_fact(w, fact, source="test")
    finally:
        store.close()


def lines(text: str) -> list[str]:
    return [re.sub(r"\s{2,}", " | ", line.strip()) for line in text.splitlines()]


def test_json_gives_every_metric_with_value_unit_sample_size_and_tier(conveyor: Conveyor) -> None:
    store_facts(conveyor.home)
    data = conveyor("dora", *WINDOW, "--json", check=True).json()
    m = data["metrics"]
    assert set(m) == {
        "deployment_frequency",
        "lead_time",
        "change_failure_rate",
        "recovery_time",
        "rework_rate",
        "batch_size",
        "caught_before_traffic",
        "incident_recovery",
        "work_in_progress",
    }
    # By hand in test_a_rollback: 2 deployments in two weeks, CFR 1/3, recovery 10 min,
    # rework 1/4, lead time 2 h. The previous two weeks: d0 alone, lead time 4 h.
    df = m["deployment_frequency"]
    assert (df["value"], df["unit"], df["sample_size"], df["tier"]) == (
        1.0,
        "deployments per week",
        2,
        "high",
    )
    assert (df["previous"], df["trend"], df["better"]) == (0.5, "up", True)
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["sample_size"]) == (1, 3)
    assert (m["recovery_time"]["value"], m["recovery_time"]["unit"]) == (600.0, "seconds")
    assert (m["rework_rate"]["value"], m["rework_rate"]["tier"]) == (0.25, None)
    assert (m["lead_time"]["value"], m["lead_time"]["previous"]) == (7200.0, 14400.0)
    assert m["work_in_progress"]["value"] == 0.0
    assert data["window"]["from"] == "2024-01-01"
    assert data["previous_window"]["to"] == "2024-01-01"
    assert "explanation" not in df  # only with --explain
    assert [r["deployments"] for r in data["series"]] == [2, 0]


def test_the_table_shows_tiers_and_trend_arrows(conveyor: Conveyor) -> None:
    store_facts(conveyor.home)
    out = lines(conveyor("dora", *WINDOW, "--tz", "Europe/Paris", check=True).stdout)
    assert out[0] == (
        "DORA · all services (1) · production · 2024-01-01 → 2024-01-15 "
        "(14 days, Europe/Paris, weeks from Monday)"
    )
    assert (
        "deployment frequency | 1.00 / week | - | 2 deployments | high | "
        "↑ from 0.50 / week better" in out
    )
    # Two and three deployments are too few (under 5) for the tier of lead time, the CFR and
    # recovery time: "too few" where the tier was, and why under the table.
    assert "lead time for changes | 2h | 2d 3h | 3 commits | too few | ↓ from 4h better" in out
    # d0 alone in the previous two weeks: no failure, nothing unplanned.
    assert "change failure rate | 33.3 % | - | 3 deployments | too few | ↑ from 0.0 % worse" in out
    assert "failed deployment recovery time | 10m | 10m | 1 failure | too few | -" in out
    assert (
        "no tier: small sample: 2 deployments in the window, fewer than the 5 a tier needs" in out
    )
    assert "deployment rework rate | 25.0 % | - | 4 deployments | - | ↑ from 0.0 % worse" in out
    assert "batch size | 1.5 commits | 2 commits | 2 deployments | - | ↑ from 1 commit worse" in out
    assert "2024-01-08 | 0 | 0 | - | - | - | - | -" in out  # the empty week is there


def test_csv_gives_the_series(conveyor: Conveyor) -> None:
    store_facts(conveyor.home)
    out = conveyor("dora", *WINDOW, "--csv", check=True).stdout.splitlines()
    assert out[0].startswith("start,end,days,deployments,deploy_days,commits,lead_time_median")
    assert out[1].startswith("2024-01-01,2024-01-08,7,2,2,3,7200.0,")
    assert out[2].startswith("2024-01-08,2024-01-15,7,0,0,0,,")


def test_explain_lists_what_is_behind_each_figure(conveyor: Conveyor) -> None:
    store_facts(conveyor.home)
    out = conveyor("dora", *WINDOW, "--explain", check=True).stdout
    assert (
        "  2024-01-03 10:15  deployment d2 (shop)  failed: rolled back; undone by rollback r1"
        in out
    )
    assert "  2024-01-03 10:15  deployment r1 (shop)  excluded: rollback" in out
    # 51 h, and the exact seconds (51 × 3600) beside it.
    assert "  2024-01-03 09:00  commit b (shop)  2d 3h (183600 s)  counted [deployment d3]" in out
    assert (
        "  2024-01-03 10:05  failure d2 (shop)  10m (600 s)  detected: check failed; restored: "
        "healthy rollback r1 in production finished at 2024-01-03T10:15:00Z" in out
    )
    assert "  2024-01-03 10:15  deployment r1 (shop)  unplanned: rollback of d2" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tz", "Mars/Olympus"), "error: unknown time zone 'Mars/Olympus'"),
        (("--since", "90d", "--from", "2024-01-01"), "error: give --since or --from, not both"),
        (("--since", "36h"), "error: --since takes whole days or weeks (90d, 12w), not '36h'"),
        (("--tiers", "2019"), "error: there is no DORA tier table '2019'"),
        (("--from", "2024-02-01", "--to", "2024-01-01"), "is empty"),
        (("--week-start", "someday"), "--week-start must be a day name"),
    ],
)
def test_bad_options_say_what_is_wrong(
    conveyor: Conveyor, args: tuple[str, ...], message: str
) -> None:
    result = conveyor("dora", *args)
    assert result.returncode == 1
    assert message in result.stderr


def test_json_and_csv_together_is_a_usage_error(conveyor: Conveyor) -> None:
    result = conveyor("dora", "--json", "--csv")
    assert result.returncode == 2
    assert "--json and --csv cannot be used together" in result.stderr


@pytest.mark.integration
def test_through_a_server_the_output_is_the_same(tmp_path: Path, conveyor: Conveyor) -> None:
    server = ServerProcess(tmp_path / "server-home")
    server.home.mkdir(parents=True)
    store_facts(server.home)
    token = server.token("reader", "read")
    server.start()
    try:
        local = Conveyor(home=server.home, cwd=conveyor.cwd)
        embedded = local("dora", *WINDOW, "--json", "--explain", check=True).stdout
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=token)
        remote = conveyor("dora", *WINDOW, "--json", "--explain", check=True).stdout
        assert json.loads(remote)["metrics"]["change_failure_rate"]["failed"] == 1
        assert remote == embedded
        table = conveyor("dora", *WINDOW, "--explain", check=True).stdout
        assert table == local("dora", *WINDOW, "--explain", check=True).stdout
        conveyor.extra_env["CONVEYOR_TOKEN"] = "cvy_not-a-token"
        refused = conveyor("dora", *WINDOW)
        assert refused.returncode == 1
        assert "unknown or revoked token" in refused.stderr
    finally:
        server.stop()
