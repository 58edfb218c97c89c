"""Every statement a DORA report sends to the database finds its rows through an index: none
reads a whole large table (runs, releases, deployments, incidents, facts...), so a report stays
fast however long the history grows.

The store is written as the server writes it (services, runs with their jobs, releases,
deployments through staging to production, approvals, incidents, deployment facts and their
commits), then every statement of a first report (which builds the summary), a repeated one,
an explained one (read from the facts), a staging one and a one-service comparison is captured
as sent (SQLAlchemy's ``before_cursor_execute``) and asked for its plan: EXPLAIN QUERY PLAN on
SQLite (a SCAN of the table, through an index or not), EXPLAIN on PostgreSQL after ANALYZE,
with sequential scans, hash and merge joins priced out (so a Seq Scan that remains is one no
index could replace — on a store this small the planner would otherwise prefer one)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from conveyor.facts import Change, DeploymentResult
from conveyor.metrics.dora import Settings, Window
from conveyor.metrics.load import report
from conveyor.store.db import Settings as StoreSettings
from conveyor.store.db import Store, open_store
from conveyor.store.facts import write_fact
from conveyor.store.models import Approval, Deployment, Job, Release, Run, Service
from tests.metrics import at, deployment
from tests.metrics.test_dora_store import add_incident
from tests.plans import captured, faults, plan_steps, planned

# Tables that grow with the history (the others hold a row per service, environment or
# profile).
LARGE = {
    "runs",
    "jobs",
    "steps",
    "releases",
    "deployments",
    "approvals",
    "approval_decisions",
    "incidents",
    "deployment_facts",
    "change_facts",
    "dora_days",
    "events",
}
HOUR = dt.timedelta(hours=1)


def _history(store: Store) -> None:
    """Three services, 60 releases each over two months: each run has two jobs; each release
    goes to staging, most then to production (some fail, some are rolled back, some are
    rejected at the approval, some superseded in the queue); incidents of every kind."""
    start = at(1, 1)
    incidents: list[tuple[int, dt.datetime, dict[str, Any]]] = []
    with store.write() as w:
        s = w.session
        for n, name in enumerate(("shop", "cart", "ledger")):
            service = Service(name=name, repository=f"/srv/{name}")
            s.add(service)
            s.flush()
            for i in range(60):
                t = start + dt.timedelta(hours=24 * i + n)
                sha = f"{n}{i:039d}"
                run = Run(
                    service_id=service.id,
                    status="succeeded",
                    sha=sha,
                    trigger="push",
                    created_at=t - HOUR,
                    started_at=t - HOUR,
                    finished_at=t,
                )
                s.add(run)
                s.flush()
                for k, job in enumerate(("build", "test")):
                    s.add(Job(run_id=run.id, name=job, position=k, status="succeeded"))
                release = Release(service_id=service.id, run_id=run.id, sha=sha, created_at=t)
                s.add(release)
                s.flush()
                _deploy(s, service, release, "staging", "staging", "succeeded", t + HOUR)
                outcome = ("succeeded", "failed", "succeeded", "rejected", "superseded")[i % 5]
                if i % 7 == 6:
                    outcome = "rolled_back"
                prod = _deploy(
                    s, service, release, "production", "production", outcome, t + 3 * HOUR
                )
                if outcome in ("rejected", "superseded"):
                    status = "rejected" if outcome == "rejected" else "withdrawn"
                    s.add(Approval(deployment_id=prod.id, status=status, decided_at=t + 2 * HOUR))
                    continue
                fact = deployment(
                    f"c{prod.id}",
                    t + 3 * HOUR,
                    Change(sha, t - 2 * HOUR, None, t - HOUR),
                    service=name,
                    result=_result(outcome),
                    failed_at=t + 3 * HOUR if outcome != "succeeded" else None,
                    stages={"run_started": t - HOUR, "run_finished": t},
                )
                write_fact(w, fact, source="conveyor", deployment_id=prod.id)
                if outcome == "rolled_back":
                    back = _deploy(
                        s, service, release, "production", "production", "succeeded", t + 4 * HOUR
                    )
                    back.kind, back.rollback_of = "rollback", prod.id
                    undo = replace(fact, id=f"c{back.id}", kind="rollback", rollback_of=fact.id)
                    write_fact(
                        w,
                        replace(undo, result="succeeded", failed_at=None, changes=()),
                        source="conveyor",
                        deployment_id=back.id,
                    )
                if i % 9 == 0:
                    kinds: list[dict[str, Any]] = [
                        {"deployment_id": prod.id},
                        {"release_id": release.id},
                        {"data": {"commit": sha[:7]}},
                        {"environment": "production"},
                    ]
                    incidents.append((service.id, t + 5 * HOUR, kinds[(i // 9) % 4]))
            # Imported history of the service, and an imported incident naming it by key.
            for i in range(20):
                t = start + dt.timedelta(hours=24 * i + 12)
                write_fact(w, deployment(f"i:{name}:{i}", t, service=name), source="import")
            named = {"deployment_key": f"i:{name}:3"}
            incidents.append((service.id, start + dt.timedelta(days=3, hours=13), named))
    for service_id, opened, extra in incidents:
        add_incident(store, service_id, opened, opened + HOUR, **extra)


def _result(outcome: str) -> DeploymentResult:
    return (
        "rolled_back"
        if outcome == "rolled_back"
        else "failed"
        if outcome == "failed"
        else "succeeded"
    )


def _deploy(
    s: Any, service: Service, release: Release, env: str, tier: str, status: str, t: dt.datetime
) -> Deployment:
    dep = Deployment(
        service_id=service.id,
        environment=env,
        tier=tier,
        release_id=release.id,
        status=status,
        trigger="auto",
        created_at=t - HOUR,
        started_at=t - HOUR / 6,
        finished_at=t,
    )
    s.add(dep)
    s.flush()
    return dep


def _full_scans(store: Store, statement: str, params: Any) -> list[str]:
    """The large tables ``statement`` reads whole, by its plan. On PostgreSQL, a test-sized
    store would have the planner read small tables whole and hash them: priced out, a Seq Scan
    that remains is a read no index could narrow. (An index walked from end to end is not
    counted there: the planner does that to tiny tables whatever the indexes; SQLite's plans,
    which do not depend on sizes, catch those.)"""
    steps = plan_steps(store, statement, params, priced_out=("seqscan", "hashjoin", "mergejoin"))
    whole = r"SCAN (\w+)" if store.engine.dialect.name == "sqlite" else r"Seq Scan (\w+)"
    found = [re.match(whole, step) for step in steps]
    return [m.group(1) for m in found if m and m.group(1) in LARGE]


def test_every_statement_of_a_dora_report_uses_an_index(tmp_path: Path, database_url: str) -> None:
    store = open_store(StoreSettings(home=tmp_path / "home", database_url=database_url))
    try:
        _history(store)
        window = Window(dt.date(2024, 1, 15), dt.date(2024, 3, 1))
        with captured(store) as sent:
            first = report(store, window, Settings()).to_json()
            report(store, window, Settings())
            report(store, window, Settings(explain=True))
            report(store, window, Settings(tier="staging"))
            report(store, window, Settings(service="shop", compare=True, explain=True))
        # What was read is a real history, not an empty one.
        assert first["metrics"]["deployment_frequency"]["count"] > 50
        assert first["metrics"]["recovery_time"]["sample_size"] > 5
        scans = faults(store, sent, lambda s, p: _full_scans(store, s, p))
        assert not scans, "full scans of large tables:\n" + "\n".join(
            f"{sorted(set(t))}: {s}" for s, t in scans.items()
        )
        assert len({s for s, _ in sent if planned(s)}) > 10  # the capture heard the report
    finally:
        store.close()
