"""DORA's definitions of 2024 as a user meets them through `conveyor import` and
`conveyor dora --explain` (docs/metrics.md, decision 0018): recovery is never the failing
deployment's own end, a deployment that never served is caught rather than failed, imported
records are shown under their own ids with exact seconds, and a commit dated after its
deployment is noted."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import Conveyor

WINDOW = ("--from", "2024-03-04", "--to", "2024-03-11")
D1 = {
    "kind": "deployment",
    "service": "shop",
    "environment": "production",
    "id": "d1",
    "commit": "aaaaaaa1",
    "started_at": "2024-03-05T10:00:00Z",
    "finished_at": "2024-03-05T10:30:00Z",
    "status": "succeeded",
    "commits": [{"sha": "bbbbbbb1", "committed_at": "2024-03-05T08:00:00Z"}],
}
INC1 = {
    "kind": "incident",
    "service": "shop",
    "id": "INC-1",
    "opened_at": "2024-03-05T10:10:00Z",
    "resolved_at": "2024-03-05T12:00:00Z",
    "environment": "production",
}


def imported(conveyor: Conveyor, *records: dict[str, Any]) -> Path:
    path = conveyor.cwd.parent / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_an_incident_during_a_deployment_is_recovered_by_its_resolution_not_that_deployment(
    conveyor: Conveyor,
) -> None:
    """The issue's repro: INC-1 opened at 10:10 while d1 ran (so it is d1's failure); d1
    ending at 10:30 restored nothing. Restored when INC-1 was resolved: 10:10 → 12:00."""
    conveyor("import", str(imported(conveyor, D1, INC1)), check=True)
    out = conveyor("dora", *WINDOW, "--explain", check=True).stdout
    assert re.search(r"^failed deployment recovery time +1h 50m ", out, re.MULTILINE)
    assert (
        "  2024-03-05 10:10  failure d1 (shop)  1h 50m (6600 s)  detected: incident INC-1 "
        "opened; restored: its incidents resolved at 2024-03-05T12:00:00Z" in out
    )
    assert (
        "  2024-03-05 10:10  incident INC-1 (shop)  attributed to d1 (window): d1 was serving "
        "production when it began, before it finished" in out
    )
    data = conveyor("dora", *WINDOW, "--json", check=True).json()["metrics"]
    assert (data["recovery_time"]["value"], data["recovery_time"]["sample_size"]) == (6600.0, 1)
    # One deployment is too few for a tier: a warning instead.
    assert data["recovery_time"]["tier"] is None
    assert data["recovery_time"]["warning"] == (
        "small sample: 1 deployment in the window, fewer than the 5 a tier needs"
    )


def test_an_imported_deployment_that_never_served_is_caught_not_failed(
    conveyor: Conveyor,
) -> None:
    """d2's candidate failed its checks before taking traffic (``served: false``); INC-1
    opens while it runs, but d1 is what served users then, so d1 is blamed."""
    d2 = {
        **D1,
        "id": "d2",
        "commit": "ccccccc1",
        "started_at": "2024-03-05T10:05:00Z",
        "finished_at": "2024-03-05T10:20:00Z",
        "status": "failed",
        "served": False,
        "commits": [],
    }
    conveyor("import", str(imported(conveyor, D1, d2, INC1)), check=True)
    m = conveyor("dora", *WINDOW, "--json", "--explain", check=True).json()["metrics"]
    # Served: d1 only, and it failed (INC-1). d2 is apart.
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["deployments"]) == (1, 1)
    assert (m["caught_before_traffic"]["caught"], m["caught_before_traffic"]["share"]) == (1, 0.5)
    cfr = {i["id"]: i["how"] for i in m["change_failure_rate"]["explanation"]}
    assert cfr["d2"].startswith("excluded: caught before production traffic")
    assert cfr["INC-1"].startswith("attributed to d1 (window)")
    assert [i["id"] for i in m["recovery_time"]["explanation"]] == ["d1"]


def test_served_false_on_a_succeeded_deployment_is_refused_and_nothing_stored(
    conveyor: Conveyor,
) -> None:
    bad = conveyor("import", str(imported(conveyor, {**D1, "served": False})))
    assert bad.returncode == 1
    assert "error: line 1: served: a succeeded deployment served its users" in bad.stderr
    assert "Traceback" not in bad.stderr
    m = conveyor("dora", *WINDOW, "--json", check=True).json()["metrics"]
    assert m["deployment_frequency"]["count"] == 0


def test_a_commit_dated_after_its_deployment_is_noted_not_silently_zero(
    conveyor: Conveyor,
) -> None:
    late = {**D1, "commits": [{"sha": "bbbbbbb1", "committed_at": "2024-03-05T11:00:00Z"}]}
    conveyor("import", str(imported(conveyor, late)), check=True)
    out = conveyor("dora", *WINDOW, "--explain", check=True).stdout
    # Committed 11:00, deployed by 10:30: 30 minutes of skew; its lead time counts as 0.
    assert (
        "  2024-03-05 11:00  commit bbbbbbb1 (shop)  0s (0 s)  counted; skew: dated 30m after its "
        "deployment ended (a clock or a rewritten date), so its lead time is taken as 0s "
        "[deployment d1]" in out
    )


def test_the_default_window_starts_at_a_young_services_first_deployment(
    conveyor: Conveyor,
) -> None:
    """A service first deployed yesterday: the default 90 days would rate its one deployment
    "low" (one in 90 days); the window starts at its first deployment instead, and says so."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    yesterday = now - dt.timedelta(days=1)
    young = {
        **D1,
        "started_at": yesterday.isoformat(),
        "finished_at": (yesterday + dt.timedelta(minutes=10)).isoformat(),
        "commits": [],
    }
    conveyor("import", str(imported(conveyor, young)), check=True)
    data = conveyor("dora", "--json", check=True).json()
    window = data["window"]
    assert window["from"] == yesterday.date().isoformat()
    assert window["days"] == 2  # yesterday and today
    assert window["note"].startswith(f"from {yesterday.date()}, the first production deployment")
    # One deployment in two days: every 2 days, "high" (daily to weekly), not "low".
    df = data["metrics"]["deployment_frequency"]
    assert (df["count"], df["tier"]) == (1, "high")
    shown = conveyor("dora", check=True).stdout
    assert f"window: from {yesterday.date()}, the first production deployment" in shown
    # Asked for explicitly, 90 days are 90 days.
    asked = conveyor("dora", "--since", "90d", "--json", check=True).json()
    assert asked["window"]["days"] == 90
    assert "note" not in asked["window"]
