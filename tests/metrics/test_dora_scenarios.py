"""The DORA engine on the design's scenarios, each worked out by hand: a first deployment with
a long history, a rollback, a failed deployment without incident, an incident without
deployment, overlapping incidents, an empty week, a window boundary in a non-UTC time zone,
attribution inside and outside the attribution window.

Unless a test says otherwise the window is 2024-01-01 → 2024-01-15 (two weeks, a Monday to a
Monday, UTC) and service "shop" deploys to one production environment.
"""

from __future__ import annotations

import datetime as dt

from tests.metrics import DAY, HOUR, at, commit, deployment, dora, how, incident


def test_a_first_deployment_does_not_absorb_the_history_before_its_look_back() -> None:
    report = dora(
        [
            # The service's first production deployment ever: its range is the whole history.
            deployment(
                "d1",
                at(1, 10, 12),
                commit("old1", at(6, 1, year=2023)),  # 223.5 days before: out of 30 days
                commit("old2", at(12, 1, 12, year=2023)),  # 40 days before: out
                commit("new1", at(1, 9, 12)),  # 1 day before: 86400 s
                commit("new2", at(12, 15, 12, year=2023)),  # 26 days before: 2246400 s
            ),
            # Not a first deployment: an old commit (a long-lived branch) counts in full.
            deployment(
                "d2",
                at(1, 20, 12),
                commit("c3", at(1, 20, 10)),  # 2 h: 7200 s
                commit("c4", at(11, 1, year=2023)),  # Nov 1 → Jan 20 12:00 = 80.5 d = 6955200
            ),
        ],
        end=dt.date(2024, 2, 1),
    )
    lead = report["metrics"]["lead_time"]
    # Counted, sorted: 7200, 86400, 2246400, 6955200. Median = (86400 + 2246400) / 2;
    # p90 = rank ceil(0.9 × 4) = 4 → 6955200.
    assert (lead["value"], lead["p90"], lead["sample_size"]) == (1166400.0, 6955200.0, 4)
    # 13.5 days would be "medium", but two deployments are too few for a tier (fewer than 5).
    assert lead["tier"] is None
    assert lead["warning"].startswith("small sample: 2 deployments in the window")
    explained = how(report, "lead_time")
    assert explained["old1"].startswith("excluded: older than the 30d look-back")
    assert explained["old2"].startswith("excluded: older than the 30d look-back")
    assert explained["new2"] == explained["c4"] == "counted"
    # Batch size counts what counted: 2 and 2.
    assert report["metrics"]["batch_size"]["value"] == 2.0


def test_the_look_back_is_configurable_and_a_known_earlier_deployment_lifts_it() -> None:
    d1 = deployment(
        "d1",
        at(1, 10, 12),
        commit("old1", at(6, 1, year=2023)),  # Jun 1 → Jan 10 12:00: 214 + 9.5 = 223.5 d
        commit("new1", at(1, 9, 12)),  # 1 d
    )
    wide = dora([d1], end=dt.date(2024, 2, 1), look_back=dt.timedelta(days=400))
    assert wide["metrics"]["lead_time"]["sample_size"] == 2
    assert wide["metrics"]["lead_time"]["p90"] == 223.5 * DAY
    # A successful deployment before (even outside the window) means d1 is not a first one.
    d0 = deployment("d0", at(12, 20, year=2023))
    known = dora([d0, d1], end=dt.date(2024, 2, 1))
    assert known["metrics"]["lead_time"]["sample_size"] == 2
    assert known["metrics"]["deployment_frequency"]["count"] == 1  # d0 is before the window


def test_a_rollback() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10), commit("a", at(1, 2, 8))),  # lead 2 h
            # d2's check fails at 10:05; rollback r1 restores the previous release at 10:15.
            deployment(
                "d2",
                at(1, 3, 10, 15),
                started=at(1, 3, 10),
                result="rolled_back",
                failed_at=at(1, 3, 10, 5),
            ),
            deployment(
                "r1",
                at(1, 3, 10, 15),
                started=at(1, 3, 10, 6),
                kind="rollback",
                rollback_of="d2",
            ),
            # d3 brings d2's commit b again (d2 never succeeded) and a new one.
            deployment(
                "d3",
                at(1, 5, 12),
                commit("b", at(1, 3, 9)),  # Jan 3 09:00 → Jan 5 12:00 = 51 h
                commit("c", at(1, 5, 11)),  # 1 h
            ),
        ]
    )
    m = report["metrics"]
    # Successful deployments d1, d3 (r1 is a rollback, d2 did not succeed): 2 in 14 days.
    df = m["deployment_frequency"]
    assert (df["count"], df["value"], df["deploy_days_per_week"]) == (2, 1.0, 1.0)
    assert (df["band"], df["tier"]) == ("daily–weekly", "high")  # 7 days between: high
    # CFR over d1, d2, d3 (not r1): d2 failed → 1/3.
    cfr = m["change_failure_rate"]
    # 1/3 would be "low"; three deployments are too few for a tier.
    assert (cfr["failed"], cfr["deployments"], cfr["tier"]) == (1, 3, None)
    assert abs(cfr["value"] - 1 / 3) < 1e-6
    assert how(report, "change_failure_rate")["d2"] == "failed: rolled back; undone by rollback r1"
    assert how(report, "change_failure_rate")["r1"] == "excluded: rollback"
    # Recovery: detected 10:05 (failed check), restored 10:15 (healthy rollback) = 600 s.
    rec = m["recovery_time"]
    assert (rec["value"], rec["p90"], rec["sample_size"], rec["tier"]) == (600.0, 600.0, 1, None)
    # Rework: r1 of d1, d2, r1, d3 → 1/4.
    assert (m["rework_rate"]["value"], m["rework_rate"]["unplanned"]) == (0.25, 1)
    # Lead: 3600, 7200, 183600 → median 7200, p90 rank ceil(2.7) = 3 → 183600.
    assert (m["lead_time"]["value"], m["lead_time"]["p90"]) == (2 * HOUR, 51 * HOUR)
    # Batches 1 and 2: median 1.5, p90 rank ceil(1.8) = 2 → 2, mean 1.5.
    assert (m["batch_size"]["value"], m["batch_size"]["p90"], m["batch_size"]["mean"]) == (
        1.5,
        2.0,
        1.5,
    )


def test_a_failed_deployment_without_incident_is_restored_by_the_next_healthy_one() -> None:
    deployments = [
        deployment("d1", at(1, 2, 10)),
        # Replaced in place, it failed its check at 10:10 (users met it) and ended at 10:12.
        deployment(
            "d2",
            at(1, 4, 10, 12),
            started=at(1, 4, 10),
            result="failed",
            failed_at=at(1, 4, 10, 10),
        ),
        deployment("d3", at(1, 4, 15, 10)),  # the fix
    ]
    m = dora(deployments)["metrics"]
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["deployments"]) == (1, 3)
    # 10:10 → 15:10 = 5 h (restored by d3, a later deployment); no tier over 3 deployments.
    assert (m["recovery_time"]["value"], m["recovery_time"]["tier"]) == (5 * HOUR, None)
    # d3 restored service after d2's failure was known: a fix-forward, unplanned. 1 of 3.
    assert (m["rework_rate"]["unplanned"], m["rework_rate"]["deployments"]) == (1, 3)
    # Imported history may not say when the failure was detected: the end of the deployment
    # (10:12) stands for it, 4 h 58 min before 15:10.
    deployments[1] = deployment("d2", at(1, 4, 10, 12), started=at(1, 4, 10), result="failed")
    assert dora(deployments)["metrics"]["recovery_time"]["value"] == 4 * HOUR + 58 * 60


def test_an_incident_without_deployment_counts_for_incident_recovery_only() -> None:
    report = dora([], [incident("i1", at(1, 5, 10), at(1, 5, 10, 45))])
    m = report["metrics"]
    assert (m["change_failure_rate"]["value"], m["change_failure_rate"]["sample_size"]) == (None, 0)
    assert m["change_failure_rate"]["tier"] is None
    # No deployment caused it: not a failed deployment's recovery, an incident's (45 min).
    assert (m["recovery_time"]["value"], m["recovery_time"]["sample_size"]) == (None, 0)
    assert (m["incident_recovery"]["value"], m["incident_recovery"]["incidents"]) == (45 * 60.0, 1)
    assert how(report, "change_failure_rate")["i1"] == (
        "not attributed: no deployment was serving any environment of shop when it began; "
        "counts for incident recovery, not the CFR"
    )


def test_an_incident_long_after_the_last_deployment_is_not_blamed_on_it() -> None:
    report = dora(
        [deployment("d1", at(1, 1))],
        [incident("i1", at(1, 10), at(1, 10, 0, 1))],  # 9 days after d1 ended; 1 min
    )
    m = report["metrics"]
    assert (m["change_failure_rate"]["value"], m["change_failure_rate"]["tier"]) == (0.0, None)
    assert (m["recovery_time"]["value"], m["incident_recovery"]["value"]) == (None, 60.0)
    assert how(report, "change_failure_rate")["i1"].startswith(
        "not attributed: d1 was serving any environment of shop, but it began 216.0 h after "
        "that deployment finished (the attribution window is 48.0 h)"
    )


def test_overlapping_incidents_count_once() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10)),
            deployment("d2", at(1, 3, 9), started=at(1, 3, 8, 50)),
        ],
        [
            # Both begin within 48 h of d1: both are blamed on it, which fails once.
            incident("i1", at(1, 2, 12), at(1, 2, 14)),
            incident("i2", at(1, 2, 13), at(1, 2, 15)),
            # Another service without deployments: i3 and i4 overlap (one outage), i5 not.
            incident("i3", at(1, 10, 10), at(1, 10, 11), service="ledger"),
            incident("i4", at(1, 10, 10, 30), at(1, 10, 12), service="ledger"),
            incident("i5", at(1, 10, 13), at(1, 10, 13, 10), service="ledger"),
        ],
    )
    m = report["metrics"]
    # d1 failed (once), d2 did not: 1/2.
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["value"]) == (1, 0.5)
    # d1: detected 12:00 (i1 opened); restored when both are resolved, 15:00, before d2
    # (next day 09:00): 3 h, the one failed deployment recovery.
    rec = m["recovery_time"]
    assert (rec["value"], rec["sample_size"]) == (3 * HOUR, 1)
    assert {i["id"] for i in rec["explanation"]} == {"d1"}
    # ledger (no deployment caused them): i3+i4 10:00 → 12:00 = 2 h; i5 10 min. Median of
    # 600, 7200 = 3900; p90 rank ceil(1.8) = 2 → 7200.
    apart = m["incident_recovery"]
    assert (apart["value"], apart["p90"], apart["sample_size"]) == (3900.0, 2 * HOUR, 2)
    assert {i["id"] for i in apart["explanation"]} == {"i3+i4", "i5"}
    assert how(report, "change_failure_rate")["d1"] == (
        "failed: incident i1 (by window); incident i2 (by window)"
    )


def test_an_empty_week_inside_the_window_is_a_week_with_zero_deployments() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10)),
            deployment("d2", at(1, 3, 10)),
            deployment("d3", at(1, 16, 10)),  # nothing in the week of Jan 8
        ],
        end=dt.date(2024, 1, 22),
    )
    df = report["metrics"]["deployment_frequency"]
    # 3 deployments in 3 weeks = 1.0 a week (not 1.5 over the two weeks that had some).
    assert (df["value"], df["deploy_days_per_week"], df["days"]) == (1.0, 1.0, 21)
    weeks = [(r["start"], r["deployments"], r["lead_time_median"]) for r in report["series"]]
    assert weeks == [("2024-01-01", 2, None), ("2024-01-08", 0, None), ("2024-01-15", 1, None)]


def test_buckets_follow_the_calendar_and_the_week_start() -> None:
    months = dora([], start=dt.date(2024, 1, 15), end=dt.date(2024, 3, 10), by="month")
    # Jan 15 → Feb 1 (17 days), February 2024 (29), Mar 1 → 10 (9).
    assert [(r["start"], r["days"]) for r in months["series"]] == [
        ("2024-01-15", 17),
        ("2024-02-01", 29),
        ("2024-03-01", 9),
    ]
    # Weeks from Sunday: Jan 1 (a Monday) → Sunday Jan 7 (6 days), then 7, then 1.
    sundays = dora([], end=dt.date(2024, 1, 15), week_start="sunday")
    assert [(r["start"], r["days"]) for r in sundays["series"]] == [
        ("2024-01-01", 6),
        ("2024-01-07", 7),
        ("2024-01-14", 1),
    ]


def test_a_window_boundary_in_a_non_utc_time_zone() -> None:
    deployments = [
        deployment("dec31-2330-paris", at(12, 31, 22, 30, year=2023)),  # 23:30 Paris, Dec 31
        deployment("jan1-0030-paris", at(12, 31, 23, 30, year=2023)),  # 00:30 Paris, Jan 1
        deployment("jan7-2330-paris", at(1, 7, 22, 30)),  # 23:30 Paris, Jan 7
        deployment("jan8-0030-paris", at(1, 7, 23, 30)),  # 00:30 Paris, Jan 8
    ]
    week = dt.date(2024, 1, 8)
    paris = dora(deployments, end=week, tz="Europe/Paris", by="day")
    # Jan 1 → Jan 8 in Paris (UTC+1) is [Dec 31 23:00 UTC, Jan 7 23:00 UTC).
    assert paris["window"]["start"] == "2023-12-31T23:00:00Z"
    counted = {k for k, v in how(paris, "deployment_frequency").items() if v == "counted"}
    assert counted == {"jan1-0030-paris", "jan7-2330-paris"}
    days = [r["deployments"] for r in paris["series"]]
    assert days == [1, 0, 0, 0, 0, 0, 1]  # on Paris's Jan 1 and Jan 7
    # The same dates in UTC hold the other pair.
    utc = dora(deployments, end=week, by="day")
    counted = {k for k, v in how(utc, "deployment_frequency").items() if v == "counted"}
    assert counted == {"jan7-2330-paris", "jan8-0030-paris"}


def test_a_day_of_23_hours_at_the_daylight_saving_change() -> None:
    deployments = [
        deployment("in", at(3, 31, 21, 30)),  # 23:30 CEST on Mar 31
        deployment("out", at(3, 31, 22, 30)),  # 00:30 CEST on Apr 1
    ]
    day = dora(deployments, start=dt.date(2024, 3, 31), end=dt.date(2024, 4, 1), tz="Europe/Paris")
    # Mar 31 in Paris runs from 23:00 UTC the day before (CET) to 22:00 UTC (CEST): 23 hours.
    assert (day["window"]["start"], day["window"]["end"]) == (
        "2024-03-30T23:00:00Z",
        "2024-03-31T22:00:00Z",
    )
    assert how(day, "deployment_frequency") == {"in": "counted"}


def test_attribution_inside_and_outside_the_attribution_window() -> None:
    d1 = deployment("d1", at(1, 2))

    def cfr(opened: dt.datetime, **settings: dt.timedelta) -> float:
        found = dora([d1], [incident("i1", opened, opened + dt.timedelta(hours=1))], **settings)
        value: float = found["metrics"]["change_failure_rate"]["value"]
        return value

    assert cfr(at(1, 3, 23)) == 1.0  # 47 h after d1 ended: blamed on it
    assert cfr(at(1, 4)) == 1.0  # exactly 48 h: still inside
    assert cfr(at(1, 4, 1)) == 0.0  # 49 h: outside
    assert cfr(at(1, 4, 1), attribution_window=dt.timedelta(hours=72)) == 1.0


def test_explicit_attribution_and_what_it_cannot_blame() -> None:
    old = deployment("d0", at(10, 1, year=2023))  # months before the window
    d1 = deployment("d1", at(1, 2))
    report = dora(
        [old, d1],
        [
            incident("i1", at(1, 3), at(1, 3, 2), names="d0"),  # explicit: d0, not the live d1
            incident("i2", at(1, 10), at(1, 10, 1), names="d1"),  # explicit: 8 days later
        ],
    )
    m = report["metrics"]
    # Only d1 is in the window; it failed (i2, explicit, whatever the delay).
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["deployments"]) == (1, 1)
    explained = how(report, "change_failure_rate")
    assert explained["i1"] == "attributed to d0 (explicit): named by the incident: d0"
    assert explained["i2"] == "attributed to d1 (explicit): named by the incident: d1"
    # d0's failure was detected in the window (i1 opened Jan 3): its recovery counts here,
    # 2 h (i1 resolved; no healthy deployment after it). d1: i2 resolved after 1 h.
    assert m["recovery_time"]["sample_size"] == 2
    assert sorted(i["value"] for i in m["recovery_time"]["explanation"]) == [HOUR, 2 * HOUR]


def test_an_incident_naming_a_rollback_blames_no_deployment() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2), result="rolled_back", failed_at=at(1, 1, 23, 55)),
            deployment("r1", at(1, 2), started=at(1, 1, 23, 56), kind="rollback", rollback_of="d1"),
        ],
        [incident("i1", at(1, 2, 1), at(1, 2, 2), names="r1")],
    )
    assert how(report, "change_failure_rate")["i1"].startswith(
        "not attributed: it names rollback r1"
    )


def test_deployments_made_because_of_an_incident_are_rework() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10)),
            # i1 opens 71 h after d1 (not blamed on it); d2 starts while it is open and is
            # the healthy deployment that restores service.
            deployment("d2", at(1, 5, 10, 30), started=at(1, 5, 10)),
            deployment("d3", at(1, 6, 10), fixes_incident=True),
            deployment("d4", at(1, 7, 10)),
        ],
        [
            incident("i1", at(1, 5, 9), at(1, 5, 12)),
            # i2 opens after d4 started, and i2 is resolved before d4 ends: d4 was not made
            # because of it (it started first), so it stays planned.
            incident("i2", at(1, 7, 9, 55), at(1, 7, 9, 58)),
        ],
    )
    m = report["metrics"]
    # Unplanned: d2 (restored service after i1 was known: a fix-forward), d3 (marked) → 2 of 4.
    assert (m["rework_rate"]["value"], m["rework_rate"]["unplanned"]) == (0.5, 2)
    explained = how(report, "rework_rate")
    assert explained["d2"] == "unplanned: fix-forward: restored service after failure i1"
    assert explained["d3"] == "unplanned: marked as fixing an incident"
    assert explained["d4"] == "planned"
    # d2 (healthy at 10:30) restored service before i1 was resolved (12:00): 1 h 30 min, an
    # incident recovery (no deployment caused i1).
    assert m["incident_recovery"]["median"] == 1.5 * HOUR


def test_a_deployment_started_while_an_incident_is_open_is_not_rework_by_itself() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10)),
            # i1 opens 71 h after d1 and is resolved at 12:00 by whoever; d2 starts during it
            # but ends after the resolution: it restored nothing, so it was planned work.
            deployment("d2", at(1, 5, 13), started=at(1, 5, 11)),
        ],
        [incident("i1", at(1, 5, 9), at(1, 5, 12))],
    )
    assert how(report, "rework_rate") == {"d1": "planned", "d2": "planned"}
    assert report["metrics"]["rework_rate"]["value"] == 0.0


def test_rework_counts_rollbacks_in_both_numerator_and_denominator() -> None:
    m = dora(
        [
            deployment("d1", at(1, 2), result="rolled_back", failed_at=at(1, 1, 23, 50)),
            deployment("r1", at(1, 2), started=at(1, 1, 23, 51), kind="rollback", rollback_of="d1"),
        ]
    )["metrics"]
    # 1 unplanned (r1) of 2 deployments: a rate, never above 100 %.
    assert (m["rework_rate"]["value"], m["rework_rate"]["deployments"]) == (0.5, 2)
    # The CFR leaves r1 out of both: d1 failed, 1/1.
    assert m["change_failure_rate"]["value"] == 1.0


def test_a_failure_not_yet_restored_is_counted_but_left_out_of_the_median() -> None:
    m = dora([deployment("d1", at(1, 2, 10), result="failed", failed_at=at(1, 2, 9, 55))])[
        "metrics"
    ]
    rec = m["recovery_time"]
    assert (rec["value"], rec["sample_size"], rec["failures"], rec["not_restored"]) == (
        None,
        0,
        1,
        1,
    )


def test_trends_against_the_previous_window() -> None:
    report = dora(
        [
            deployment("before", at(12, 20, 12, year=2023), commit("p", at(12, 20, 8, year=2023))),
            deployment("d1", at(1, 2, 12), commit("a", at(1, 2, 10))),
            deployment("d2", at(1, 9, 12), commit("b", at(1, 9, 10))),
        ],
        compare=True,
    )
    assert report["previous_window"]["from"] == "2023-12-18"
    df, lead = report["metrics"]["deployment_frequency"], report["metrics"]["lead_time"]
    # 1 deployment in the previous two weeks (0.5 a week), 2 now (1.0): up, better.
    assert (df["previous"], df["value"], df["trend"], df["better"]) == (0.5, 1.0, "up", True)
    # Lead time 4 h before, 2 h now: down, better.
    assert (lead["previous"], lead["value"], lead["trend"], lead["better"]) == (
        4 * HOUR,
        2 * HOUR,
        "down",
        True,
    )


def test_what_was_live_when_an_incident_began() -> None:
    report = dora(
        [
            deployment("d1", at(1, 2, 10)),
            # d2 runs 10:00 → 10:30 on Jan 3; its rollback r1 runs 11:00 → 11:10.
            deployment("d2", at(1, 3, 10, 30), started=at(1, 3, 10)),
            deployment(
                "r1", at(1, 3, 11, 10), started=at(1, 3, 11), kind="rollback", rollback_of="d2"
            ),
        ],
        [
            incident("during", at(1, 3, 10, 20), at(1, 3, 10, 40)),  # d2 had started
            incident("after-rollback", at(1, 3, 11, 5), at(1, 3, 11, 6)),  # r1 had started
        ],
    )
    explained = how(report, "change_failure_rate")
    assert explained["during"] == (
        "attributed to d2 (window): d2 was serving any environment of shop when it began, "
        "before it finished"
    )
    assert explained["after-rollback"] == (
        "not attributed: the deployment serving any environment of shop, r1, is a rollback; "
        "counts for incident recovery, not the CFR"
    )
    # d2 failed (the incident and the rollback); d1 did not: the rollback spared it.
    assert explained["d2"] == "failed: undone by rollback r1; incident during (by window)"
    assert explained["d1"] == "ok"
