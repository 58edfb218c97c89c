"""A real Alertmanager for tests, beside a real Prometheus whose alert rules it routes.

Built from tests.prometheus' blocks: `Daemon` runs the binary (its own configuration and storage
under the test's folder, 127.0.0.1 and a free port, gossip off) and waits for ``/-/ready``;
it is stopped by its PID. The configuration is the one docs/incidents.md gives users, with
intervals of a second so that an alert reaches the webhook about a second after it fires:
``group_wait: 0s``, ``group_interval: 1s``, ``send_resolved: true``, and the bearer token in
``http_config.authorization``.

Without the binaries the fixtures skip, except in CI (CI=true), where they fail naming the apt
package to install.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from conveyor.spec.load import parse_pipeline
from conveyor.store.db import Store
from conveyor.store.models import Deployment, EnvironmentState, Release, Run, Service
from tests.prometheus import Daemon, Exporter, Prometheus, find_binary, start_prometheus
from tests.serverproc import free_port, until

ALERTMANAGER_YML = """\
route:
  receiver: conveyor
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: conveyor
    webhook_configs:
      - url: {url}
        send_resolved: true
{auth}"""
AUTH_YML = """\
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


@dataclass
class Alertmanager:
    """An Alertmanager (``url``) posting every notification to one webhook."""

    url: str
    address: str
    daemon: Daemon

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds now (its API v2)."""
        r = httpx.get(f"{self.url}/api/v2/alerts", timeout=5)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    def stop(self) -> None:
        self.daemon.stop()


def start_alertmanager(root: Path, webhook_url: str, token: str | None = None) -> Alertmanager:
    """Alertmanager on a free port with its configuration and storage under ``root``, sending
    to ``webhook_url`` with ``token`` as its bearer token."""
    binary = find_binary("prometheus-alertmanager")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "alertmanager.yml"
    auth = AUTH_YML.format(token=json.dumps(token)) if token else ""
    config.write_text(ALERTMANAGER_YML.format(url=json.dumps(webhook_url), auth=auth))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = Daemon(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # An empty cluster address turns gossip off: one Alertmanager, no peers.
            "--cluster.listen-address=",
        ],
        root / "alertmanager.log",
        f"{url}/-/ready",
    )
    return Alertmanager(url=url, address=f"127.0.0.1:{port}", daemon=daemon)


class ScrapeTarget:
    """Where Prometheus scrapes when that is a real service rather than tests.prometheus'
    Exporter: `start_prometheus` only reads the target's ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address


def start_alerting_prometheus(
    root: Path, target: str, rules: str, alertmanager: Alertmanager
) -> Prometheus:
    """Prometheus scraping ``target`` (host:port) every second, evaluating ``rules`` every
    second and sending its alerts to ``alertmanager``."""
    return start_prometheus(
        root,
        cast(Exporter, ScrapeTarget(target)),
        rules=rules,
        alertmanager=alertmanager.address,
    )


def wait_alert_state(prometheus: Prometheus, name: str, state: str, timeout: float) -> None:
    """Wait (bounded) until Prometheus shows alert ``name`` in ``state`` (pending, firing) or,
    for ``inactive``, not at all."""

    def reached() -> bool:
        r = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5)
        alerts = [a for a in r.json()["data"]["alerts"] if a["labels"]["alertname"] == name]
        if state == "inactive":
            return not alerts
        return any(a["state"] == state for a in alerts)

    until(reached, timeout, f"alert {name} to be {state} in Prometheus")


@pytest.fixture
def alertmanager_root(tmp_path: Path) -> Iterator[Path]:
    """A folder for an Alertmanager's (and its Prometheus') files, removed afterwards; skips
    (fails in CI) when either binary is missing."""
    find_binary("prometheus")
    find_binary("prometheus-alertmanager")
    root = tmp_path / "alerting"
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --- notifications as Alertmanager 0.25 sends them ---------------------------------------------

# Recorded from the real Alertmanager above (a rule `ShopErrors` with labels service=shop,
# severity=page): the firing notification, then the resolved one.
GENERATOR_URL = (
    "http://vm:55409/graph?g0.expr=sum%28rate%28shop_errors_total%5B3s%5D%29%29+%3E+0&g0.tab=1"
)
RECORDED_FIRING: dict[str, Any] = {
    "receiver": "conveyor",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ShopErrors", "service": "shop", "severity": "page"},
            "annotations": {"summary": "shop is failing requests"},
            "startsAt": "2026-11-26T07:48:46.841Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": GENERATOR_URL,
            "fingerprint": "0765ac6d955dc062",
        }
    ],
    "groupLabels": {"alertname": "ShopErrors", "service": "shop"},
    "commonLabels": {"alertname": "ShopErrors", "service": "shop", "severity": "page"},
    "commonAnnotations": {"summary": "shop is failing requests"},
    "externalURL": "http://vm:34639",
    "version": "4",
    "groupKey": '{}:{alertname="ShopErrors", service="shop"}',
    "truncatedAlerts": 0,
}
RECORDED_RESOLVED: dict[str, Any] = {
    **RECORDED_FIRING,
    "status": "resolved",
    "alerts": [
        {
            **RECORDED_FIRING["alerts"][0],
            "status": "resolved",
            "endsAt": "2026-11-26T07:48:49.841Z",
        }
    ],
}


def alert(
    status: str = "firing",
    *,
    fingerprint: str = "0765ac6d955dc062",
    starts_at: str = "2026-11-26T07:48:46.841Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert of a notification, shaped as Alertmanager sends it."""
    return {
        "status": status,
        "labels": {"alertname": "ShopErrors", "service": "shop", **(labels or {})},
        "annotations": {"summary": "shop is failing requests"}
        if annotations is None
        else annotations,
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": GENERATOR_URL,
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A notification carrying ``alerts`` (firing if any of them fires, as Alertmanager says)."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {**RECORDED_FIRING, "status": status, "alerts": list(alerts)}


# --- a recorded delivery history to attribute incidents to ------------------------------------

HISTORY_PIPELINE = """\
service: shop
jobs:
  test:
    run: "true"
environments:
  staging:
    deploy: { target: process, start: python3 app.py }
  production:
    after: staging
    tier: production
    deploy: { target: process, start: python3 app.py }
"""
SHA_V1 = "1111111" + "a" * 33
SHA_V2 = "2222222" + "b" * 33


@dataclass(frozen=True)
class History:
    """What `seed_history` wrote: ids, and when v2 started serving and finished."""

    service_id: int
    release_v1: int
    release_v2: int
    staging_v2: int
    production_v1: int
    production_v2: int
    v2_healthy_at: dt.datetime
    v2_finished_at: dt.datetime


def seed_history(store: Store, now: dt.datetime, *, service: str = "shop") -> History:
    """``service`` with v1 then v2 deployed to production (v2 serving since ten minutes
    before ``now``, finished a minute later) and v2 in staging: the record as the delivery
    controller leaves it, written directly so tests can set every time."""
    pipeline = parse_pipeline(HISTORY_PIPELINE).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    minutes = dt.timedelta(minutes=1)
    with store.write() as w:
        svc = Service(name=service, repository="/nonexistent", created_at=now - 600 * minutes)
        w.session.add(svc)
        w.session.flush()
        releases = []
        for sha in (SHA_V1, SHA_V2):
            run = Run(
                service_id=svc.id,
                status="succeeded",
                sha=sha,
                trigger="manual",
                commit={},
                pipeline=pipeline,
                created_at=now - 500 * minutes,
            )
            w.session.add(run)
            w.session.flush()
            release = Release(
                service_id=svc.id,
                run_id=run.id,
                sha=sha,
                created_at=now - 500 * minutes,
                evidence={},
                publication={"status": "none"},
            )
            w.session.add(release)
            w.session.flush()
            releases.append(release)

        def deployment(
            release: Release, environment: str, healthy: dt.datetime, finished: dt.datetime
        ) -> Deployment:
            dep = Deployment(
                service_id=svc.id,
                environment=environment,
                tier="production" if environment == "production" else "staging",
                release_id=release.id,
                kind="deploy",
                status="succeeded",
                trigger="auto",
                created_at=healthy - minutes,
                started_at=healthy - minutes,
                healthy_at=healthy,
                served_at=healthy,
                finished_at=finished,
                checks=[],
                log=[],
                instance={},
            )
            w.session.add(dep)
            w.session.flush()
            return dep

        v2_healthy, v2_finished = now - 10 * minutes, now - 9 * minutes
        p1 = deployment(releases[0], "production", now - 300 * minutes, now - 299 * minutes)
        s2 = deployment(releases[1], "staging", now - 30 * minutes, now - 29 * minutes)
        p2 = deployment(releases[1], "production", v2_healthy, v2_finished)
        for name, tier, current in (("staging", "staging", s2), ("production", "production", p2)):
            w.session.add(
                EnvironmentState(
                    service_id=svc.id,
                    name=name,
                    tier=tier,
                    current_release_id=current.release_id,
                    current_deployment_id=current.id,
                    verified_release_id=current.release_id,
                    instance={},
                    healthy=True,
                    since=current.healthy_at,
                    held=False,
                    updated_at=now,
                )
            )
        return History(
            service_id=svc.id,
            release_v1=releases[0].id,
            release_v2=releases[1].id,
            staging_v2=s2.id,
            production_v1=p1.id,
            production_v2=p2.id,
            v2_healthy_at=v2_healthy,
            v2_finished_at=v2_finished,
        )


def add_rollback(store: Store, history: History, healthy_at: dt.datetime) -> int:
    """A rollback of production to v1 that became healthy at ``healthy_at``."""
    with store.write() as w:
        dep = Deployment(
            service_id=history.service_id,
            environment="production",
            tier="production",
            release_id=history.release_v1,
            kind="rollback",
            status="succeeded",
            trigger="rollback",
            rollback_of=history.production_v2,
            created_at=healthy_at,
            started_at=healthy_at,
            healthy_at=healthy_at,
            served_at=healthy_at,
            finished_at=healthy_at,
            checks=[],
            log=[],
            instance={},
        )
        w.session.add(dep)
        w.session.flush()
        return int(dep.id)
