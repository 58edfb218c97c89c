"""The shipped recording rules on real data: a real `conveyor server` (a built-in runner, the
process target, real HTTP health checks) carries out production deployments of a real git
repository (two that succeed, one whose checks fail and that is rolled back), a real Prometheus
scrapes it every second from before the first deployment, and each recording rule of
deploy/prometheus/conveyor-rules.yml is compared with `conveyor dora --json` over the same
deployments.

The rules are the shipped file's, evaluated every second instead of every minute (a test cannot
wait minutes). Where a rule approximates, the bound is said beside the comparison: increase()
extrapolates from the last scrape to the evaluation time, and quantiles come from histogram
buckets."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.metrics.exposition import LEAD_TIME_BUCKETS, RESOLUTION_BUCKETS
from tests.conftest import GitRepo
from tests.delivery.harness import APP, pipeline, stop_released_processes
from tests.delivery.test_delivery_drill import deployments
from tests.prometheus import instant_query, start_scraping
from tests.serverproc import ServerProcess, until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "conveyor-rules.yml"
# Deployments end within seconds here; each wait is bounded well above that.
DEPLOYED_SECONDS = 30.0
SCRAPED_SECONDS = 30.0
# Prometheus scrapes and evaluates every second.
INTERVAL = 1.0

PIPELINE = pipeline("""
production:
  tier: production
  deploy: { target: process, start: python3 app.py }
  health: { http: { path: /healthz, within: 2s, interval: 100ms } }
""")


def commit(repo: GitRepo, monkeypatch: pytest.MonkeyPatch, message: str, ago: dt.timedelta,
           files: dict[str, str] | None = None) -> None:  # fmt: skip
    """A commit whose committer date is ``ago`` before now: lead times of minutes to hours
    without waiting for them, so that they fall in different buckets."""
    when = (dt.datetime.now(dt.UTC) - ago).isoformat(timespec="seconds")
    monkeypatch.setenv("GIT_COMMITTER_DATE", when)
    repo.commit(message, files)
    monkeypatch.delenv("GIT_COMMITTER_DATE")


def version(repo: GitRepo, monkeypatch: pytest.MonkeyPatch, name: str, ago: dt.timedelta,
            *, healthy: bool = True) -> None:  # fmt: skip
    files = {"app.py": APP, "VERSION": name, "HEALTHY": "yes" if healthy else "no",
             "conveyor.yml": PIPELINE}  # fmt: skip
    commit(repo, monkeypatch, name, ago, files)


def rules_every_second() -> str:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = f"{INTERVAL:g}s"
    return str(yaml.safe_dump(rules, sort_keys=False))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "server-home", runners=1)
    srv.admin = srv.token("admin", "admin")
    yield srv
    srv.stop()
    stop_released_processes(srv.home)


def ended(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    """The deployments of shop once ``count`` have ended (and none is still going)."""
    found = deployments(server)
    done = [d for d in found if d["status"] in ("succeeded", "failed", "rolled_back")]
    return found if len(done) == count == len(found) else []


def bucket_of(value: float, bounds: tuple[float, ...]) -> tuple[float, float]:
    """The histogram bucket (lower, upper] that holds ``value``."""
    lower = 0.0
    for upper in bounds:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def test_recording_rules_agree_with_conveyor_dora(
    server: ServerProcess, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version(repo, monkeypatch, "v1", dt.timedelta(minutes=45))
    # Prometheus first: it takes about 5 s to begin scraping a new target, the server as long
    # to start.
    url, daemon = start_scraping(
        tmp_path / "prometheus", f"127.0.0.1:{server.port}", rules=rules_every_second()
    )
    try:
        server.start()
        r = server.api("POST", "/services", json={"name": "shop", "repository": str(repo.path)})
        assert r.status_code == 201, r.text

        def query(expr: str) -> list[Any]:
            result: list[Any] = instant_query(url, expr)["result"]
            return result

        def one(expr: str) -> float:
            [series] = query(expr)
            return float(series["value"][1])

        # Prometheus has scraped the service's series, at 0, before anything is deployed.
        until(lambda: query('conveyor_lead_time_seconds_count{service="shop"} == 0'),
              SCRAPED_SECONDS, "the first scrape")  # fmt: skip

        # v1: one commit of 45 min ago. v2: commits of 2 h 30 min and 10 min ago. v3: its
        # health check fails, it is rolled back to v2 (and its commit never reaches users).
        server.trigger("shop")
        until(lambda: ended(server, 1), DEPLOYED_SECONDS, "v1 deployed")
        commit(repo, monkeypatch, "older work", dt.timedelta(hours=2, minutes=30))
        version(repo, monkeypatch, "v2", dt.timedelta(minutes=10))
        server.trigger("shop")
        until(lambda: ended(server, 2), DEPLOYED_SECONDS, "v2 deployed")
        version(repo, monkeypatch, "v3", dt.timedelta(minutes=5), healthy=False)
        server.trigger("shop")
        final = until(lambda: ended(server, 4), DEPLOYED_SECONDS, "v3 rolled back")
        assert [(d["kind"], d["status"]) for d in final] == [
            ("deploy", "succeeded"),
            ("deploy", "succeeded"),
            ("deploy", "rolled_back"),
            ("rollback", "succeeded"),
        ]

        # Prometheus has scraped the final totals, and every recording rule has been evaluated
        # after that scrape.
        totals = 'sum(conveyor_deployments_total{service="shop"})'
        until(lambda: query(f"{totals} == 4"), SCRAPED_SECONDS, "the final scrape")
        [scraped] = query('max(timestamp(conveyor_deployments_total{service="shop"}))')
        after = float(scraped["value"][1])
        records = sorted(
            rule["record"]
            for group in yaml.safe_load(RULES.read_text())["groups"]
            if group["name"] == "conveyor-dora"
            for rule in group["rules"]
            if "record" in rule
        )

        stale: list[str] = []

        def evaluated() -> dict[str, list[Any]]:
            found = {name: query(f'timestamp({name}{{service="shop"}})') for name in records}
            stale[:] = [n for n, s in found.items() if not s or float(s[0]["value"][1]) <= after]
            return {} if stale else {name: query(f'{name}{{service="shop"}}') for name in records}

        try:
            recorded = until(evaluated, SCRAPED_SECONDS, "the rules evaluated after the scrape")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; absent or not evaluated since: {stale}") from None
        rule = {name: float(series[0]["value"][1]) for name, series in recorded.items()}
        # How long the deployment series had been scraped when the rules ran: increase()
        # extrapolates at most one scrape plus one evaluation interval past the last sample,
        # a share 2 s / age of the window's samples, so a count may read that much high.
        [born] = query(
            'min(min_over_time(timestamp(conveyor_deployments_total{service="shop"})[5m:1s]))'
        )
        age = after - float(born["value"][1])
        high = 1 + 2 * INTERVAL / age

        today = dt.datetime.now(dt.UTC).date()
        # What `conveyor dora --json` prints (tests/metrics/test_dora_cli.py: the same through
        # the server as on its store), over yesterday to tomorrow: every deployment here.
        window = {
            "from": str(today - dt.timedelta(days=1)),
            "to": str(today + dt.timedelta(days=1)),
        }
        r = server.api("GET", "/dora", params={"service": "shop", **window})
        assert r.status_code == 200, r.text
        dora = r.json()["metrics"]
        report = {
            "frequency": dora["deployment_frequency"]["sample_size"],
            "cfr": dora["change_failure_rate"]["value"],
            "deployments": dora["change_failure_rate"]["sample_size"],
            "lead p50": dora["lead_time"]["value"],
            "lead p90": dora["lead_time"]["p90"],
            "recovery": dora["recovery_time"]["value"],
        }
        print(f"rules: {rule}\ndora: {report}\nseries scraped for {age:.1f} s")
        assert report["frequency"] == 2
        assert report["deployments"] == 3
        # The three commits that reached users are in the histogram, as in the report.
        assert one('conveyor_lead_time_seconds_count{service="shop"}') == 3
        assert dora["lead_time"]["sample_size"] == 3

        # Deployment frequency: per day over 7 days, so 7 times it is the count.
        per_week = 7 * rule["conveyor:deployment_frequency:per_day_7d"]
        assert report["frequency"] <= per_week <= report["frequency"] * high
        count = rule["conveyor:deployments:increase7d"]
        assert report["deployments"] <= count <= report["deployments"] * high
        # Change failure rate: one of three (v3, rolled back); both sides of the ratio are
        # extrapolated alike.
        for name in (
            "conveyor:change_failure_rate:ratio_7d",
            "conveyor:change_failure_rate:ratio_30d",
        ):
            assert rule[name] == pytest.approx(report["cfr"], rel=high - 1), name
        assert rule["conveyor:deployments_caught_before_traffic:increase7d"] == 0
        # Lead time: Prometheus interpolates inside the bucket that holds the quantile, so the
        # rule's value is in the same bucket as the exact one.
        for name, exact in (
            ("conveyor:lead_time_seconds:p50_7d", report["lead p50"]),
            ("conveyor:lead_time_seconds:p50_30d", report["lead p50"]),
            ("conveyor:lead_time_seconds:p90_7d", report["lead p90"]),
            ("conveyor:lead_time_seconds:p90_30d", report["lead p90"]),
        ):
            lower, upper = bucket_of(exact, LEAD_TIME_BUCKETS)
            assert lower <= rule[name] <= upper, (name, rule[name], exact)
        # Recovery: v3's failure, restored by the rollback, to the bucket. The incident that
        # failure opened was resolved by the same rollback: the time to resolve it is the
        # recovery time too, to the bucket.
        assert dora["recovery_time"]["sample_size"] == 1
        assert one('conveyor_deployment_recovery_seconds_count{service="shop"}') == 1
        [incident] = server.api("GET", "/incidents", params={"service": "shop"}).json()
        assert incident["status"] == "resolved"
        lower, upper = bucket_of(report["recovery"], RESOLUTION_BUCKETS)
        for name in (
            "conveyor:deployment_recovery_seconds:p50_30d",
            "conveyor:incident_resolution_seconds:p50_30d",
        ):
            assert lower <= rule[name] <= upper, (name, rule[name], report["recovery"])
    finally:
        daemon.stop()
