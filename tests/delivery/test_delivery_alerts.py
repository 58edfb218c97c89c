"""Incidents from real alerts: a real `conveyor server` deploys a service with the process
target, a real Prometheus scrapes it through the environment's stable port and a real
Alertmanager posts to the server's webhook. The release that breaks is blamed, the rollback
restores the service, the alert resolves, and the recovery time is the one the record shows.

Also `conveyor incident` embedded against a data directory (the integration test runs it
against the server).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.engine.alerts import record_alerts
from conveyor.sources.alertmanager import parse_notification
from conveyor.store.db import Settings, open_store
from conveyor.store.models import utcnow
from tests.alertmanager import (
    Alertmanager,
    History,
    alert,
    alertmanager_root,  # noqa: F401 -- a fixture, used by name
    notification,
    seed_history,
    start_alerting_prometheus,
    start_alertmanager,
    wait_alert_state,
)
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import stop_released_processes
from tests.prometheus import Prometheus
from tests.serverproc import ServerProcess, clean_env, conveyor_argv, free_port, until

# The service: stdlib only. /metrics exposes shop_errors_total; a release whose ERRORS file
# says "yes" counts an error every 50 ms (as if it failed requests) while /healthz still
# answers 200, so its health check passes and only the alert can see the failure.
APP = """\
import http.server, os, pathlib, threading

VERSION = pathlib.Path("VERSION").read_text().strip()
FAILING = pathlib.Path("ERRORS").read_text().strip() == "yes"
errors = 0
lock = threading.Lock()


def fail_requests():
    global errors
    while True:
        threading.Event().wait(0.05)
        with lock:
            errors += 1


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/metrics":
            with lock:
                body = (
                    "# TYPE shop_errors_total counter\\n"
                    f"shop_errors_total {errors}\\n"
                ).encode()
            kind = "text/plain; version=0.0.4"
        else:
            body, kind = VERSION.encode(), "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if FAILING:
    threading.Thread(target=fail_requests, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

RULES = """\
groups:
  - name: shop
    rules:
      - alert: ShopErrors
        expr: sum(rate(shop_errors_total[3s])) > 0
        for: 1s
        labels: { service: shop, severity: page }
        annotations: { summary: "shop is failing requests" }
"""

# Every wait is bounded; these are generous for a 2-core machine under a full test run.
DEPLOY_SECONDS = 60.0
# Prometheus needs about 5 s to see a new target, then `for: 1s`, then Alertmanager.
ALERT_SECONDS = 60.0


def commit(repo: GitRepo, version: str, *, failing: bool, port: int) -> None:
    repo.commit(
        version,
        {
            "app.py": APP,
            "VERSION": version,
            "ERRORS": "yes" if failing else "no",
            "conveyor.yml": textwrap.dedent(f"""\
                service: shop
                jobs:
                  test:
                    run: "true"
                environments:
                  production:
                    tier: production
                    deploy:
                      target: process
                      start: python3 app.py
                      strategy: blue-green
                      port: {port}
                    health: {{ http: {{ path: /healthz, within: 10s, interval: 100ms }} }}
                """),
        },
    )


def answer(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def api_json(server: ServerProcess, path: str, **params: Any) -> Any:
    r = server.api("GET", path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def deployments(server: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api_json(server, "/deployments", service="shop")
    return list(reversed(found))


def serving(server: ServerProcess, release: int) -> dict[str, Any] | None:
    """The production environment once ``release`` serves it, healthy, with nothing queued."""
    for env in api_json(server, "/environments", service="shop"):
        if env["release"] == release and env["healthy"] and not env["queue"]:
            return dict(env)
    return None


def remote_cli(server: ServerProcess, token: str, *args: str) -> str:
    """The `conveyor` command against the server (CONVEYOR_URL), as a person would run it."""
    out = subprocess.run(
        conveyor_argv(*args),
        env=clean_env(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=token),
        cwd=server.home.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def alerting(tmp_path: Path, alertmanager_root: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A server (not started) with an Alertmanager posting to it and a Prometheus scraping
    the stable port production will have; everything stopped by PID afterwards."""
    server = ServerProcess(tmp_path / "server-home", runners=1)
    started: list[Any] = []
    try:
        server.admin = server.token("admin", "admin")
        hook_token = server.token("alertmanager", "trigger")
        alertmanager = start_alertmanager(
            alertmanager_root / "alertmanager",
            f"{server.url}/api/v1/hooks/alertmanager",
            hook_token,
        )
        started.append(alertmanager)
        port = free_port()
        prometheus = start_alerting_prometheus(
            alertmanager_root / "prometheus", f"127.0.0.1:{port}", RULES, alertmanager
        )
        started.append(prometheus.daemon)
        yield {
            "server": server,
            "alertmanager": alertmanager,
            "prometheus": prometheus,
            "port": port,
        }
    finally:
        server.stop()
        stop_released_processes(server.home)
        for daemon in reversed(started):
            daemon.stop()


@pytest.mark.integration
def test_a_failing_release_is_blamed_rolled_back_and_its_recovery_time_recorded(
    alerting: dict[str, Any], repo: GitRepo
) -> None:
    server: ServerProcess = alerting["server"]
    prometheus: Prometheus = alerting["prometheus"]
    alertmanager: Alertmanager = alerting["alertmanager"]
    port: int = alerting["port"]
    server.add_service("shop", repo.path)
    person = server.cli("token", "create", "olga", "--scope", "trigger", "--user", "olga")
    person = person.splitlines()[0]
    server.start()

    commit(repo, "v1", failing=False, port=port)
    server.trigger("shop")
    until(lambda: serving(server, 1), DEPLOY_SECONDS, "v1 serving production")
    url = f"http://127.0.0.1:{port}"
    assert answer(url) == "v1"

    commit(repo, "v2", failing=True, port=port)
    server.trigger("shop")
    until(lambda: serving(server, 2), DEPLOY_SECONDS, "v2 serving production")
    v2 = next(d for d in deployments(server) if d["release"] == 2)
    assert v2["status"] == "succeeded"  # its health check passed: only the alert sees it

    def opened() -> dict[str, Any] | None:
        found = api_json(server, "/incidents", service="shop")
        return dict(found[0]) if found else None

    try:
        first = until(opened, ALERT_SECONDS, "Conveyor to open an incident from the alert")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nAlertmanager holds: {alertmanager.alerts()}\n"
            f"Prometheus log:\n{prometheus.daemon.output()}\n"
            f"Alertmanager log:\n{alertmanager.daemon.output()}"
        ) from None
    incident = api_json(server, f"/incidents/{first['id']}")
    assert incident["source"] == "alertmanager"
    assert incident["status"] == "open"
    assert incident["title"] == "ShopErrors: shop is failing requests"
    assert incident["environment"] == "production"
    assert incident["deployment"] == v2["id"]
    assert incident["release"] == 2
    assert incident["attribution"]["how"] == "window"
    assert parse(incident["opened_at"]) >= parse(v2["healthy_at"])  # began with v2 serving

    rolled = remote_cli(server, person, "rollback", "production", "--service", "shop")
    rollback_id = int(rolled.split("deployment ")[1].split()[0])
    until(lambda: serving(server, 1), DEPLOY_SECONDS, "v1 serving production again")
    assert answer(url) == "v1"

    def resolved() -> dict[str, Any] | None:
        found = api_json(server, f"/incidents/{first['id']}")
        return dict(found) if found["status"] == "resolved" else None

    done = until(resolved, ALERT_SECONDS, "the alert to resolve the incident")
    wait_alert_state(prometheus, "ShopErrors", "inactive", 10)
    rollback = api_json(server, f"/deployments/{rollback_id}")
    assert (rollback["kind"], rollback["status"]) == ("rollback", "succeeded")
    opened_at, resolved_at = parse(done["opened_at"]), parse(done["resolved_at"])
    restored_at = parse(rollback["healthy_at"])
    # The rollback restored the service before the alert resolved: it is the recovery.
    assert opened_at < restored_at < resolved_at
    assert done["resolved_by"] == "alert ShopErrors resolved (Alertmanager)"
    assert done["restored_by"] == f"rollback deployment {rollback_id}"
    assert parse(done["restored_at"]) == restored_at
    assert done["recovery_seconds"] == pytest.approx(
        (restored_at - opened_at).total_seconds(), abs=0.001
    )
    assert done["deployment"] == v2["id"]  # still blamed on v2

    # One incident, opened and resolved once, by the Alertmanager's token.
    events = server.query("SELECT type, data FROM events WHERE type LIKE 'incident.%' ORDER BY id")
    assert [(t, json.loads(d)["actor"]) for t, d in events] == [
        ("incident.opened", "token:alertmanager"),
        ("incident.resolved", "token:alertmanager"),
    ]

    # The CLI against the server shows the same record.
    shown = json.loads(remote_cli(server, person, "incident", "show", str(done["id"]), "--json"))
    assert shown["restored_by"] == done["restored_by"]
    listed = json.loads(remote_cli(server, person, "incident", "list", "--json"))
    assert [(i["id"], i["status"]) for i in listed] == [(done["id"], "resolved")]
    text = remote_cli(server, person, "incident", "show", str(done["id"]))
    assert f"attributed to deployment {v2['id']}" in text
    assert f"by rollback deployment {rollback_id}" in text

    # DORA's --explain (GET /dora?explain=true, what `conveyor dora --explain` prints) blames
    # the same deployment, by the same rule (conveyor.blame): v2, serving when it began.
    report = api_json(server, "/dora", service="shop", since="1d", explain="true")
    blamed = {
        i["id"]: i["how"]
        for i in report["metrics"]["change_failure_rate"]["explanation"]
        if i["kind"] == "incident"
    }
    assert blamed[str(done["id"])].startswith(f"attributed to {v2['id']} (window): ")
    assert incident["attribution"]["detail"].startswith(f"deployment {v2['id']} (")
    assert "was serving production when it began" in blamed[str(done["id"])]
    assert "was serving production when it began" in incident["attribution"]["detail"]

    # A person opens and resolves one through the server, naming the release.
    out = remote_cli(
        server, person, "incident", "open", "--service", "shop", "--title", "slow checkout",
        "--release", "2", "--at", "1m ago", "--json",
    )  # fmt: skip
    manual = json.loads(out)
    assert (manual["deployment"], manual["attribution"]["how"]) == (v2["id"], "explicit")
    out = remote_cli(server, person, "incident", "resolve", str(manual["id"]), "--reason", "ok")
    assert f"incident {manual['id']} resolved" in out
    assert api_json(server, f"/incidents/{manual['id']}")["resolved_by"] == "olga: ok"


# --- `conveyor incident` embedded --------------------------------------------------------------


@pytest.fixture
def history(conveyor: Conveyor) -> History:
    store = open_store(Settings.resolve(conveyor.home))
    try:
        return seed_history(store, utcnow())
    finally:
        store.close()


def test_incidents_are_opened_listed_shown_and_resolved_from_the_cli(
    conveyor: Conveyor, history: History
) -> None:
    conveyor.extra_env["CONVEYOR_USER"] = "olga"
    out = conveyor(
        "incident", "open", "--service", "shop", "--title", "checkout down", "--at", "5m ago",
        check=True,
    ).stdout  # fmt: skip
    assert out.startswith("incident 1 opened (shop production), attributed to deployment")
    assert f"deployment {history.production_v2}" in out
    out = conveyor(
        "incident", "open", "--service", "shop", "--title", "old bug", "--commit", "1111111",
        "--json", check=True,
    ).stdout  # fmt: skip
    assert json.loads(out)["deployment"] == history.production_v1

    listed = conveyor("incident", "list", "--open", "--json", check=True).json()
    assert [(i["id"], i["status"], i["source"]) for i in listed] == [
        (2, "open", "manual"),
        (1, "open", "manual"),
    ]
    table = conveyor("incident", "list", check=True).stdout
    assert "checkout down" in table
    assert "old bug" in table

    out = conveyor("incident", "resolve", "1", "--reason", "rolled forward", check=True).stdout
    assert out.startswith("incident 1 resolved; service was restored 5m")
    shown = conveyor("incident", "show", "1", "--json", check=True).json()
    assert shown["resolved_by"] == "olga: rolled forward"
    assert shown["recovery_seconds"] == pytest.approx(300, abs=30)
    assert [i["id"] for i in conveyor("incident", "list", "--open", "--json").json()] == [2]
    text = conveyor("incident", "show", "1", check=True).stdout
    assert "checkout down" in text
    assert "window" in text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["open", "--title", "x", "--release", "1", "--commit", "1111111"], 2, "at most one"),
        (["open", "--title", "x", "--at", "tomorrow"], 2, "is not a time"),
        (["open", "--title", "x", "--at", "1h from now"], 2, "is not a time"),
        (["open", "--title", "x", "--deployment", "99"], 1, "there is no deployment 99"),
        (["open", "--service", "nope", "--title", "x"], 1, "there is no service nope"),
        (["open", "--title", "x", "--env", "qa"], 1, "has no environment 'qa'"),
        (["resolve", "7"], 1, "there is no incident 7"),
    ],
)
def test_the_cli_refuses_what_it_cannot_record(
    conveyor: Conveyor, history: History, args: list[str], code: int, message: str
) -> None:
    if args[0] == "open" and "--service" not in args:
        args = [*args, "--service", "shop"]
    result = conveyor("incident", *args)
    assert result.returncode == code, result.output
    assert message in result.stderr


def test_an_incident_cannot_be_resolved_twice(conveyor: Conveyor, history: History) -> None:
    conveyor("incident", "open", "--service", "shop", "--title", "x", check=True)
    conveyor("incident", "resolve", "1", check=True)
    again = conveyor("incident", "resolve", "1")
    assert again.returncode == 1
    assert "incident 1 was resolved already" in again.stderr


def test_ignored_alerts_are_listed_with_the_reason(conveyor: Conveyor, history: History) -> None:
    assert conveyor("incident", "ignored", check=True).stdout.strip() == "no ignored alerts"
    store = open_store(Settings.resolve(conveyor.home))
    try:
        stray = parse_notification(json.dumps(notification(alert(labels={"service": "web"}))))
        [outcome] = record_alerts(store, stray, actor="test")
    finally:
        store.close()
    assert outcome.outcome == "ignored"
    [shown] = conveyor("incident", "ignored", "--json", check=True).json()
    assert (shown["service"], shown["reason"]) == ("web", "there is no service 'web' in Conveyor")
    assert "there is no service 'web'" in conveyor("incident", "ignored", check=True).stdout
