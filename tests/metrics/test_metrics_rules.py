"""The Prometheus rules and the Grafana dashboard against what Conveyor really exports:
`promtool check rules` and `promtool test rules` (alerts firing on series written for them);
every metric the dashboard and the rules name is one a real server exports, every dashboard
query is valid PromQL; and a real Prometheus scraping a real `conveyor server` (with the
optional scrape token) gets Conveyor's figures and evaluates the alert rules without error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conveyor.facts import Change, DeploymentFact
from conveyor.server.app import ServerConfig
from conveyor.store.db import Settings, open_store
from conveyor.store.facts import write_fact
from conveyor.store.models import utcnow
from tests.prometheus import DATA_SECONDS, Daemon
from tests.server import conftest as server
from tests.server.conftest import Api, Serve
from tests.serverproc import ServerProcess, free_port, until

# The in-process server fixture (the app, its loops and a store: SQLite, and PostgreSQL).
serve = server.serve

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "conveyor-rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "conveyor.json"
# Metric names in PromQL: ours, and the process metrics of the server's own registry.
METRIC = re.compile(r"(?<![\w:])(?:conveyor[_:]|process_)[A-Za-z0-9_:]*")
# Grafana's variables, given values so that the queries can be checked as plain PromQL.
GRAFANA_VARIABLES = {
    "$__range_s": "2592000",
    "$__range": "30d",
    "$__rate_interval": "1m",
    "$service": ".*",
    "$tier": "production",
    "$job": ".*",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (in CI these tests must run, never skip)", pytrace=False)
        pytest.skip(message)
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    out = run(promtool(), "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_show_the_alerts_firing() -> None:
    """Each alert fires (with its labels and annotations) on series made for it, and not
    before its `for:`; the recording rules give the values worked out by hand."""
    assert RULE_TESTS
    out = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    tests = [group for path in RULE_TESTS for group in yaml.safe_load(path.read_text())["tests"]]
    fired = {
        case["alertname"]
        for group in tests
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {
        "ConveyorPipelineFailing",
        "ConveyorChangeFailureRateHigh",
        "ConveyorDeploymentStuck",
        "ConveyorProductionIncidentOpen",
    } <= fired
    assert fired <= alerts


# --- the dashboard and the rules name only what is exported ---------------------------------------


def exported_names(text: str) -> set[str]:
    """The sample names a scrape may carry, from its families (those without samples yet
    included): counters as ``_total``, histograms as ``_bucket``, ``_count`` and ``_sum``."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def values_of(key: str, node: Any) -> Iterator[Any]:
    """Every value under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from values_of(key, v)
    elif isinstance(node, list):
        for item in node:
            yield from values_of(key, item)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target (rows' panels included) and variable query."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        yield f"${variable['name']}", variable["query"]["query"]


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("record") or rule["alert"], rule["expr"]


def plain(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_the_dashboard_and_rules_use_only_what_a_server_exports(
    serve: Serve, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    texts: list[str] = []

    async def body(api: Api) -> None:
        r = await api.client.get("/metrics")
        assert r.status_code == 200
        texts.append(r.text)

    serve(body, ServerConfig(runner_slots=0, delivery=False))
    exported = exported_names(texts[0])
    recorded = {name for name, _ in rule_exprs() if ":" in name}

    # Imported with a Prometheus data source chosen at import time.
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    datasources = list(values_of("datasource", dashboard))
    assert datasources
    assert all(d == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for d in datasources)
    variables = {f"${v['name']}" for v in dashboard["templating"]["list"]}

    queries = list(dashboard_queries(dashboard))
    used: set[str] = set()
    for where, expr in queries:
        names = set(METRIC.findall(expr))
        assert names, (where, expr)
        assert names <= exported, (where, names - exported)
        used |= names
        for variable in re.findall(r"\$(?!__)\w+", expr):
            assert variable in variables, (where, variable)
    for name, expr in rule_exprs():
        names = set(METRIC.findall(expr))
        assert names, (name, expr)
        assert names <= exported | recorded, (name, names - exported - recorded)

    # What the dashboard is for: deployment frequency, lead time, change failure rate, open
    # incidents, run durations, queue and approval waits.
    assert {
        "conveyor_deployments_total",
        "conveyor_lead_time_seconds_bucket",
        "conveyor_incidents_open",
        "conveyor_run_duration_seconds_bucket",
        "conveyor_run_queue_wait_seconds_bucket",
        "conveyor_job_queue_wait_seconds_bucket",
        "conveyor_approval_wait_seconds_bucket",
    } <= used

    # Every panel query is valid PromQL: promtool checks them as recording rules.
    check = tmp_path / "dashboard-queries.yml"
    check.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query{i}", "expr": plain(expr)}
                            for i, (_, expr) in enumerate(queries)
                            if not expr.startswith("label_values(")
                        ],
                    }
                ]
            }
        )
    )
    out = run(promtool(), "check", "rules", str(check))
    assert out.returncode == 0, out.stdout + out.stderr


# --- a real Prometheus scraping a real `conveyor server` ------------------------------------------

PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: conveyor
    authorization:
      credentials: {token}
    static_configs:
      - targets: ["{target}"]
"""


@pytest.mark.integration
def test_prometheus_scrapes_a_conveyor_server(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        promtool()  # skips (or fails in CI) naming the package, which has both
        pytest.skip("prometheus is not installed")
    token = "scrape-token-for-tests"
    conveyor = ServerProcess(tmp_path / "home")
    conveyor.env["CONVEYOR_METRICS_TOKEN"] = token
    conveyor.start()
    daemon: Daemon | None = None
    try:
        assert httpx.get(f"{conveyor.url}/metrics", timeout=5).status_code == 401
        # A production deployment that brought one commit, as an import records it.
        home = tmp_path / "home"
        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
        now = utcnow()
        with store.write() as w:
            write_fact(
                w,
                DeploymentFact(
                    id="i:shop:1",
                    service="shop",
                    environment="production",
                    tier="production",
                    kind="deploy",
                    result="succeeded",
                    sha="a" * 40,
                    started_at=now,
                    finished_at=now,
                    changes=(Change("a" * 40, committed_at=now.replace(microsecond=0)),),
                ),
                source="import",
            )
        store.close()

        root = tmp_path / "prometheus"
        root.mkdir()
        port = free_port()
        (root / "prometheus.yml").write_text(
            PROMETHEUS_YML.format(
                rules=json.dumps(str(RULES)),
                token=json.dumps(token),
                target=f"127.0.0.1:{conveyor.port}",
            )
        )
        url = f"http://127.0.0.1:{port}"
        daemon = Daemon(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            root / "prometheus.log",
            f"{url}/-/ready",
        )

        def query(expr: str) -> list[Any]:
            r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
            assert r.status_code == 200, r.text
            result: list[Any] = r.json()["data"]["result"]
            return result

        def deployed() -> list[Any]:
            # (== 1: a series first seen after the server's first scrape shows 0 once)
            return query(
                'conveyor_deployments_total{service="shop", kind="deploy", result="succeeded"} == 1'
            )

        [series] = until(deployed, DATA_SECONDS, "Prometheus to scrape conveyor_deployments_total")
        assert series["metric"]["tier"] == "production"
        assert series["metric"]["job"] == "conveyor"
        assert float(series["value"][1]) == 1
        [lead] = until(
            lambda: query('conveyor_lead_time_seconds_count{service="shop"} == 1'),
            DATA_SECONDS,
            "the lead time of its commit",
        )
        assert lead["metric"]["job"] == "conveyor"
        [up] = query('up{job="conveyor"}')
        assert up["value"][1] == "1"

        def alert_rules_evaluated() -> list[Any]:
            r = httpx.get(f"{url}/api/v1/rules", timeout=5)
            groups = {g["name"]: g for g in r.json()["data"]["groups"]}
            assert set(groups) == {"conveyor-dora", "conveyor-pipeline", "conveyor-alerts"}
            rules: list[Any] = groups["conveyor-alerts"]["rules"]
            return rules if all(rule["health"] == "ok" for rule in rules) else []

        # The alert rules run every second here, against the live figures, without error.
        rules = until(alert_rules_evaluated, DATA_SECONDS, "the alert rules to be evaluated")
        assert {rule["name"] for rule in rules} >= {"ConveyorDeploymentStuck"}
        assert all(rule["state"] == "inactive" for rule in rules)
    finally:
        if daemon is not None:
            daemon.stop()
        conveyor.stop()
