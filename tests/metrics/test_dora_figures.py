"""How each figure is summarised: the percentile method on small samples, tiers from both
tables, where lead time starts, several production environments, the value-stream split, the
options of a window."""

from __future__ import annotations

import datetime as dt

import pytest

from conveyor.errors import ConveyorError
from conveyor.metrics import tiers
from conveyor.metrics.dora import Settings, median, p90, window_for
from tests.metrics import DAY, HOUR, at, commit, deployment, dora, how


@pytest.mark.parametrize(
    ("values", "mid", "high"),
    [
        ([], None, None),
        ([5.0], 5.0, 5.0),  # one value is its own median and p90
        ([1.0, 2.0], 1.5, 2.0),  # rank ceil(1.8) = 2
        ([1.0, 2.0, 3.0, 4.0, 5.0], 3.0, 5.0),  # rank ceil(4.5) = 5: below 10 values, the max
        ([float(i) for i in range(1, 11)], 5.5, 9.0),  # rank ceil(9.0) = 9
        ([float(i) for i in range(1, 12)], 6.0, 10.0),  # rank ceil(9.9) = 10
        ([float(i) for i in range(1, 21)], 10.5, 18.0),  # rank 18
        ([float(i) for i in range(1, 101)], 50.5, 90.0),  # rank 90
    ],
)
def test_median_and_nearest_rank_p90(values: list[float], mid: float, high: float) -> None:
    assert (median(values), p90(values)) == (mid, high)


def test_p90_of_lead_time_on_ten_commits() -> None:
    # Ten commits 1 h … 10 h before the deployment ended: p90 is the 9th, 9 h; median 5.5 h.
    changes = [commit(f"c{h}", at(1, 3, 12) - dt.timedelta(hours=h)) for h in range(1, 11)]
    lead = dora([deployment("d1", at(1, 3, 12), *changes)])["metrics"]["lead_time"]
    assert (lead["value"], lead["p90"], lead["mean"]) == (5.5 * HOUR, 9 * HOUR, 5.5 * HOUR)


@pytest.mark.parametrize(
    ("deployments", "days", "tier", "band"),
    [
        (8, 7, "elite", "on demand"),  # 0.875 days between deployments: more than one a day
        (7, 7, "high", "daily–weekly"),  # exactly one a day is not "multiple per day"
        (1, 7, "high", "daily–weekly"),  # once a week
        (1, 8, "medium", "weekly–monthly"),
        (1, 31, "low", "less than monthly"),  # 31 days > one month (30.44 days)
        (0, 7, "low", "less than monthly"),
    ],
)
def test_deployment_frequency_tier_and_band(
    deployments: int, days: int, tier: str, band: str
) -> None:
    found = [deployment(f"d{i}", at(1, 1, 1 + i)) for i in range(deployments)]
    df = dora(found, end=dt.date(2024, 1, 1) + dt.timedelta(days=days))["metrics"]
    assert (df["deployment_frequency"]["tier"], df["deployment_frequency"]["band"]) == (tier, band)


def test_tiers_of_2023_and_2024() -> None:
    t23, t24 = tiers.load("2023"), tiers.load("dora-2024")
    assert (t23.year, t24.year) == (2023, 2024)
    assert t23.classify("lead_time", 24 * HOUR - 1) == "elite"  # less than one day
    assert t23.classify("lead_time", 24 * HOUR) == "high"
    assert t23.classify("lead_time", 20 * DAY) == "medium"
    assert t23.classify("lead_time", 60 * DAY) == "low"  # worse than every cluster: the last
    assert t23.classify("change_failure_rate", 0.12) == "medium"  # 10 % < 12 % ≤ 15 %
    assert t24.classify("change_failure_rate", 0.12) == "high"  # 2024: high is 20 %
    assert t24.classify("change_failure_rate", 0.05) == "elite"
    assert t24.classify("recovery_time", 2 * HOUR) == "high"  # high and medium: < 1 day
    assert t23.classify("recovery_time", 2 * DAY) == "medium"  # 2023 medium: up to a week
    assert t23.classify("rework_rate", 0.5) is None  # no cluster defines it
    assert t23.classify("lead_time", None) is None
    described = t24.describe()
    assert described["url"] == "https://dora.dev/research/2024/dora-report/"
    assert any("NOT CONFIRMED" in note for note in described["notes"])
    assert tiers.available() == ["2023", "2024"]
    with pytest.raises(ConveyorError, match="no DORA tier table '2019'"):
        tiers.load("2019")


def test_the_report_names_its_tier_table() -> None:
    report = dora([deployment("d1", at(1, 2))], tiers="2024")
    assert report["tiers"]["table"] == "dora-2024"
    assert report["tiers"]["title"] == "Accelerate State of DevOps Report 2024"


def test_lead_time_from_the_author_date_or_when_conveyor_saw_the_commit() -> None:
    rebased = commit(
        "r",
        at(1, 3, 10),  # committed (rebased) 2 h before the deployment ended
        authored=at(1, 1, 12),  # written two days earlier: 48 h
        seen=at(1, 3, 11),  # pushed an hour before the end: 1 h
    )
    plain = commit("p", at(1, 3, 9))  # no author date nor first-seen time: committer date, 3 h
    deployments = [deployment("d1", at(1, 3, 12), rebased, plain)]

    def leads(start: str) -> list[float]:
        report = dora(deployments, lead_time_from=start)
        return sorted(i["value"] for i in report["metrics"]["lead_time"]["explanation"])

    assert leads("committed") == [2 * HOUR, 3 * HOUR]
    assert leads("authored") == [3 * HOUR, 48 * HOUR]
    assert leads("seen") == [1 * HOUR, 3 * HOUR]


def test_a_commit_deployed_to_two_production_environments_counts_once() -> None:
    report = dora(
        [
            deployment("eu", at(1, 2, 10), commit("a", at(1, 2, 8)), environment="prod-eu"),
            deployment(
                "us",
                at(1, 2, 12),
                commit("a", at(1, 2, 8)),  # already brought by "eu"
                commit("b", at(1, 2, 11)),
                environment="prod-us",
            ),
        ]
    )
    m = report["metrics"]
    assert m["deployment_frequency"]["count"] == 2  # both deployments count
    # a: 2 h (at "eu", the first to bring it); b: 1 h.
    assert (m["lead_time"]["sample_size"], m["lead_time"]["value"]) == (2, 1.5 * HOUR)
    explained = [i for i in m["lead_time"]["explanation"] if i["deployment"] == "us"]
    assert [i["how"] for i in explained] == [
        "excluded: an earlier deployment of the service brought it",
        "counted",
    ]
    assert report["scope"]["environments"] == ["prod-eu", "prod-us"]


def test_the_value_stream_split_adds_up_to_the_lead_time() -> None:
    stages = {
        "run_started": at(1, 3, 9, 30),
        "run_finished": at(1, 3, 9, 40),
        "staging_finished": at(1, 3, 10),
        "approval_requested": at(1, 3, 10, 5),
        "approval_decided": at(1, 3, 11, 5),
    }
    d1 = deployment(
        "d1", at(1, 3, 11, 20), commit("a", at(1, 3, 8)), commit("b", at(1, 3, 9)), stages=stages
    )
    split = dora([d1])["metrics"]["lead_time"]["stages"]
    # a (08:00): waiting 1 h 30 (to the run), CI 10 min, staging 20 min, queue 5 min and
    # deployment 15 min (production), approval 1 h: 3 h 20 = its lead time.
    # b (09:00): waiting 30 min, the rest the same: 2 h 20.
    # Sums: waiting 7200, CI 1200, staging 2400, approval 7200, production 2400 (20400).
    assert {k: v["mean"] for k, v in split.items()} == {
        "waiting": 3600.0,
        "ci": 600.0,
        "staging": 1200.0,
        "approval": 3600.0,
        "production": 1200.0,
        "unsplit": 0.0,
    }
    assert split["waiting"]["share"] == round(7200 / 20400, 6)
    assert split["production"]["share"] == round(2400 / 20400, 6)


def test_a_deployment_without_stage_points_is_unsplit() -> None:
    split = dora([deployment("d1", at(1, 3, 12), commit("a", at(1, 3, 8)))])["metrics"]
    assert split["lead_time"]["stages"]["unsplit"] == {"mean": 4 * HOUR, "share": 1.0}


def test_window_options() -> None:
    today = dt.date(2024, 3, 31)
    last = window_for("90d", today=today)
    # Today included: Jan 2 → Apr 1 (excluded), 90 days.
    assert (last.start, last.end, last.days) == (dt.date(2024, 1, 2), dt.date(2024, 4, 1), 90)
    assert window_for("2w", end="2024-02-01").start == dt.date(2024, 1, 18)
    assert window_for(None, "2024-01-01", "2024-02-01").days == 31
    with pytest.raises(ConveyorError, match="give --since or --from, not both"):
        window_for("90d", "2024-01-01")
    with pytest.raises(ConveyorError, match="whole days or weeks"):
        window_for("36h")
    with pytest.raises(ConveyorError, match="--from takes a date such as 2024-03-01"):
        window_for(None, "March")
    with pytest.raises(ConveyorError, match="is empty"):
        window_for(None, "2024-02-01", "2024-01-01")
    with pytest.raises(ConveyorError, match="unknown time zone 'Mars/Olympus'"):
        window_for("7d", tz="Mars/Olympus")
    with pytest.raises(ConveyorError, match="--by must be day, week or month"):
        Settings(by="year")  # type: ignore[arg-type]


def test_every_figure_has_value_unit_sample_size_and_tier() -> None:
    report = dora([deployment("d1", at(1, 2), commit("a", at(1, 1, 23)))])
    for name, figure in report["metrics"].items():
        assert {"value", "unit", "sample_size", "tier", "definition", "explanation"} <= set(
            figure
        ), name
    assert how(report, "deployment_frequency") == {"d1": "counted"}
