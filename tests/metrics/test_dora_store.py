"""Reading the store (metrics.load) gives exactly what the engine gives on the same facts:
the margins load.py adds (the last success before, the attribution window before and after,
deployments named by rollbacks and incidents, the first restore after the window) are the ones
the figures need. Also work in progress, and incidents naming a release or a commit. Runs on
SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from conveyor.facts import DeploymentFact, IncidentFact
from conveyor.metrics.dora import Settings, Window, compute
from conveyor.metrics.load import report
from conveyor.store.db import Settings as StoreSettings
from conveyor.store.db import Store, open_store
from conveyor.store.facts import write_fact
from conveyor.store.models import Approval, Deployment, Incident, Release, Run, Service
from tests.metrics import at, commit, deployment, how

WINDOW = Window(dt.date(2024, 1, 15), dt.date(2024, 1, 29))  # previous: Jan 1 → Jan 15
HALF = dt.timedelta(milliseconds=500)


def facts() -> list[DeploymentFact]:
    return [
        deployment("s0", at(9, 1, year=2023), commit("s0c", at(8, 31, year=2023))),
        # Named by an incident in the window, and undone by a rollback in the window (in another
        # environment, so that only those names bring them).
        deployment("older", at(10, 1, year=2023), environment="production-eu"),
        deployment("old", at(11, 1, year=2023), environment="production-eu"),
        # The last success before the span: d1 is not a first deployment, its old commit
        # counts.
        deployment("s1", at(12, 1, year=2023)),
        # Failed in the attribution margin before the previous window: an incident the next
        # morning is blamed on it (not on s1, a month old).
        deployment(
            "m1", at(12, 31, 20, year=2023), result="failed", failed_at=at(12, 31, 19, year=2023)
        ),
        deployment(
            "d1",
            at(1, 16, 12) + HALF,
            commit("a", at(8, 1, year=2023)),
            commit("b", at(1, 16, 9) + HALF / 2, authored=at(1, 15, 9), seen=at(1, 16, 10)),
            stages={"run_started": at(1, 16, 10) + HALF, "run_finished": at(1, 16, 11)},
        ),
        deployment("d2", at(1, 18, 10, 20), result="rolled_back", failed_at=at(1, 18, 10, 5)),
        deployment("r1", at(1, 18, 10, 20), kind="rollback", rollback_of="d2"),
        deployment(
            "r2", at(1, 20, 9), kind="rollback", rollback_of="older", environment="production-eu"
        ),
        deployment("d3", at(1, 22, 12), commit("c", at(1, 22, 11))),
        deployment("d5", at(1, 28, 12), result="failed", failed_at=at(1, 28, 11, 55)),
        # Undone by a rollback that ends after the window (within the attribution margin).
        deployment("d4", at(1, 27, 20), service="cart"),
        deployment(
            "r3",
            at(1, 29, 1),
            started=at(1, 29, 0, 50),
            kind="rollback",
            rollback_of="d4",
            service="cart",
        ),
        # A week after the window: the first healthy deployment after d5 failed.
        deployment("d6", at(2, 5, 12), commit("e", at(2, 5, 11))),
        # Staging is another tier: never counted in production.
        deployment(
            "st1", at(1, 16, 11), commit("b", at(1, 16, 9)), environment="staging", tier="staging"
        ),
    ]


def add_service(store: Store, name: str) -> int:
    with store.write() as w:
        service = Service(name=name, repository=f"/srv/{name}")
        w.session.add(service)
        w.session.flush()
        return service.id


def add_incident(
    store: Store, service_id: int, opened: dt.datetime, resolved: dt.datetime, **extra: Any
) -> int:
    with store.write() as w:
        row = Incident(
            service_id=service_id,
            status="resolved",
            title="down",
            source="test",
            opened_at=opened,
            resolved_at=resolved,
            **extra,
        )
        w.session.add(row)
        w.session.flush()
        return row.id


def test_the_store_gives_what_the_engine_gives(tmp_path: Path, database_url: str) -> None:
    store = open_store(StoreSettings(home=tmp_path / "home", database_url=database_url))
    try:
        with store.write() as w:
            for fact in facts():
                write_fact(w, fact, source="test")
        shop, ledger = add_service(store, "shop"), add_service(store, "ledger")
        incidents = [
            # 14 h after m1 (margin): blamed on it by window.
            ("shop", add_incident(store, shop, at(1, 1, 10), at(1, 1, 11)), None),
            # 1 h after d1: blamed on it.
            ("shop", add_incident(store, shop, at(1, 16, 13), at(1, 16, 14)), None),
            # Names "old" (explicitly, as an import records it).
            (
                "shop",
                add_incident(store, shop, at(1, 24), at(1, 24, 2), deployment_key="old"),
                "old",
            ),
            # Another service, no deployment at all.
            ("ledger", add_incident(store, ledger, at(1, 25), at(1, 25, 0, 30)), None),
            # Recorded by window when it opened (on some deployment 999): DORA applies its own
            # window to the facts instead, and blames d3 (4 h before).
            (
                "shop",
                add_incident(
                    store,
                    shop,
                    at(1, 22, 16),
                    at(1, 22, 17),
                    deployment_id=999,
                    data={"attribution": {"how": "window", "detail": "..."}},
                ),
                None,
            ),
        ]
        expected_incidents = [
            IncidentFact(str(i), service, opened, resolved, None, names)
            for (service, i, names), (opened, resolved) in zip(
                incidents,
                [
                    (at(1, 1, 10), at(1, 1, 11)),
                    (at(1, 16, 13), at(1, 16, 14)),
                    (at(1, 24), at(1, 24, 2)),
                    (at(1, 25), at(1, 25, 0, 30)),
                    (at(1, 22, 16), at(1, 22, 17)),
                ],
                strict=True,
            )
        ]
        for start, explain in [
            ("committed", False),
            ("committed", True),
            ("authored", True),
            ("seen", True),
        ]:
            settings = Settings(explain=explain, lead_time_from=start)  # type: ignore[arg-type]
            from_store = report(store, WINDOW, settings).to_json()
            assert from_store["metrics"].pop("work_in_progress")["value"] == 0
            expected = compute(facts(), expected_incidents, WINDOW, settings).to_json()
            assert from_store == expected
        # What the margins changed, in the window's figures:
        m = from_store["metrics"]
        # d5 (Jan 28 11:55) was restored by d6 a week after the window: 8 days 5 min.
        assert 8 * 86400 + 300 in [i["value"] for i in m["recovery_time"]["explanation"]]
        # r2 undid "older" (Oct 2023): detected when r2 started, in the window.
        assert "older" in how(from_store, "recovery_time")
        assert how(from_store, "change_failure_rate")[str(incidents[2][1])] == (
            "attributed to old (explicit): named by the incident: old"
        )
        # d1 is not a first deployment: its commit from August counts.
        assert how(from_store, "lead_time")["a"] == "counted"
        assert how(from_store, "change_failure_rate")["d4"] == "failed: undone by rollback r3"
        assert how(from_store, "change_failure_rate")[str(incidents[4][1])] == (
            "attributed to d3 (window): d3 was serving any environment of shop when it began, "
            "4.0 h after it finished (window 48.0 h)"
        )
        assert from_store["scope"]["environments"] == ["production", "production-eu"]
    finally:
        store.close()


def test_work_in_progress_and_incidents_naming_a_release_or_a_commit(
    tmp_path: Path, database_url: str
) -> None:
    store = open_store(StoreSettings(home=tmp_path / "home", database_url=database_url))
    try:
        shop, ledger = add_service(store, "shop"), add_service(store, "ledger")
        with store.write() as w:

            def release(service_id: int, sha: str) -> Release:
                run = Run(service_id=service_id, status="succeeded", sha=sha, trigger="test")
                w.session.add(run)
                w.session.flush()
                made = Release(service_id=service_id, run_id=run.id, sha=sha, created_at=at(1, 10))
                w.session.add(made)
                w.session.flush()
                return made

            def deploy(made: Release, env: str, tier: str, status: str) -> Deployment:
                dep = Deployment(
                    service_id=made.service_id,
                    environment=env,
                    tier=tier,
                    release_id=made.id,
                    status=status,
                    trigger="auto",
                    finished_at=at(1, 11),
                )
                w.session.add(dep)
                w.session.flush()
                return dep

            release(shop, "r0" * 20)  # older than what production runs, never deployed
            r1 = release(shop, "r1" * 20)
            prod = deploy(r1, "production", "production", "succeeded")
            r2 = release(shop, "r2" * 20)
            deploy(r2, "staging", "staging", "succeeded")
            deploy(r2, "production", "production", "failed")  # not in production
            release(shop, "r3" * 20)  # built only
            release(ledger, "r4" * 20)  # nothing of ledger ever reached production
            write_fact(w, deployment("c-prod", at(1, 11)), source="conveyor", deployment_id=prod.id)
            write_fact(w, deployment("c-other", at(1, 11, 1)), source="conveyor")
            other_sha = "c-other-sha"
        by_release = add_incident(store, shop, at(1, 11, 2), at(1, 11, 3), release_id=r1.id)
        by_commit = add_incident(
            store, shop, at(1, 11, 4), at(1, 11, 5), data={"commit": other_sha[:7]}
        )
        found = report(
            store, Window(dt.date(2024, 1, 8), dt.date(2024, 1, 15)), Settings(explain=True)
        ).to_json()
    finally:
        store.close()
    wip = found["metrics"]["work_in_progress"]
    # r2 (in staging; failed in production) and r3 of shop, r4 of ledger; r0 was skipped.
    assert (wip["value"], wip["sample_size"], wip["unit"]) == (3.0, 3, "releases")
    assert wip["by_environment"] == {"built": 2, "staging": 1}
    assert wip["by_service"] == {"ledger": 1, "shop": 2}
    assert [i["how"] for i in wip["explanation"]] == [
        "in staging, not yet in production",
        f"built ({'r3' * 6}), not deployed yet",
        f"built ({'r4' * 6}), not deployed yet",
    ]
    explained = how(found, "change_failure_rate")
    # The release's deployment fact (c-prod), and the latest deployment of the commit.
    assert explained[str(by_release)] == (
        "attributed to c-prod (explicit): named by the incident: c-prod"
    )
    assert explained[str(by_commit)] == (
        "attributed to c-other (explicit): named by the incident: c-other"
    )


def test_work_in_progress_leaves_out_rejected_and_superseded_releases(
    tmp_path: Path, database_url: str
) -> None:
    """A release refused at its approval, or superseded (a newer one took its place in a queue,
    replaced it in the environment it reached, or, never deployed, was deployed after it) is
    not waiting to reach production: it is not work in progress."""
    store = open_store(StoreSettings(home=tmp_path / "home", database_url=database_url))
    try:
        shop = add_service(store, "shop")
        with store.write() as w:
            hour = [0]

            def release(name: str, *deployed: tuple[str, str]) -> Release:
                run = Run(service_id=shop, status="succeeded", sha=name * 20, trigger="test")
                w.session.add(run)
                w.session.flush()
                made = Release(service_id=shop, run_id=run.id, sha=name * 20, created_at=at(1, 10))
                w.session.add(made)
                w.session.flush()
                for env, status in deployed:
                    hour[0] += 1
                    dep = Deployment(
                        service_id=shop,
                        environment=env,
                        tier="production" if env == "production" else env,
                        release_id=made.id,
                        status=status,
                        trigger="auto",
                        finished_at=at(1, 11, hour[0]),
                    )
                    w.session.add(dep)
                    w.session.flush()
                    if status == "rejected":
                        w.session.add(Approval(deployment_id=dep.id, status="rejected"))
                return made

            ok = "succeeded"
            release("r1", ("dev", ok), ("staging", ok), ("production", ok))  # what production runs
            release("r2", ("dev", ok), ("staging", ok), ("production", "rejected"))
            release("r3", ("dev", ok), ("staging", "superseded"))  # r4 took its place
            release("r4", ("dev", ok), ("staging", ok))  # replaced in staging by r5
            release("r5", ("dev", ok), ("staging", ok))  # waiting in staging
            release("r6")  # built, never deployed; r7 was deployed after it
            release("r7", ("dev", ok))  # waiting in dev
            release("r8")  # built, the newest: waiting
        found = report(store, Window(dt.date(2024, 1, 8), dt.date(2024, 1, 15)), Settings())
    finally:
        store.close()
    wip = found.to_json()["metrics"]["work_in_progress"]
    assert (wip["value"], wip["by_environment"]) == (3.0, {"built": 1, "dev": 1, "staging": 1})
    shas = {i["how"] for i in found.figures["work_in_progress"].items}
    assert shas == {
        "in staging, not yet in production",
        "in dev, not yet in production",
        f"built ({'r8' * 6}), not deployed yet",
    }
