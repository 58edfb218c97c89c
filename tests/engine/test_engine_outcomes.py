"""engine.outcomes on its own, against a store and no target: what a carrier's reports (placed,
checked, serving, succeeded, failed, published) do to the deployment and its environment.
The same paths with real targets and checks are in tests/delivery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.deploy_states import DeploymentKind
from conveyor.engine import outcomes
from conveyor.engine.promotion import queue_first_environments, start_next
from conveyor.engine.runs import create_run
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import (
    Approval,
    Deployment,
    EnvironmentState,
    Event,
    Incident,
    Release,
    Run,
)


def pipeline(on_failure: str = "rollback") -> dict[str, Any]:
    deploy = {"deploy": {"start": "true"}, "on_failure": on_failure}
    return {
        "service": "shop",
        "jobs": {"test": {"run": "true"}},
        "environments": {
            "staging": deploy,
            "production": {**deploy, "after": "staging", "tier": "production"},
        },
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'c.db'}"))
    yield s
    s.close()


def new_release(store: Store, n: int, file: dict[str, Any], publication: str = "none") -> int:
    """A release of commit ``n``; its first environments are queued."""
    run_id = create_run(
        store,
        service="shop",
        repository="/srv/shop.git",
        sha=f"{n:040x}",
        ref="refs/heads/main",
        trigger="manual",
        commit={},
        pipeline=file,
        jobs=[],
    )
    with store.write() as w:
        run = w.session.get_one(Run, run_id)
        release = Release(service_id=run.service_id, run_id=run_id, sha=run.sha)
        w.session.add(release)
        w.session.flush()
        queue_first_environments(w, release)
        release.publication = {"status": publication}
        return release.id


def started(store: Store, environment: str = "staging") -> int:
    """The deployment of ``environment`` that starts now (others may start with it)."""
    [one] = [
        s.deployment_id
        for s in start_next(store, "test:1")
        if deployment(store, s.deployment_id).environment == environment
    ]
    return one


def deployment(store: Store, id: int) -> Deployment:
    with store.session() as session:
        return session.get_one(Deployment, id)


def env(store: Store, name: str) -> EnvironmentState:
    with store.session() as session:
        row = session.scalar(select(EnvironmentState).where(EnvironmentState.name == name))
        assert row is not None
        return row


def event_types(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(Event.type).order_by(Event.id)))


def placed_and_succeeded(store: Store, id: int) -> list[int]:
    outcomes.record_placed(store, id, {"endpoint": "http://127.0.0.1:1"}, "http://127.0.0.1:1")
    return outcomes.succeed(store, id)


def test_success_makes_the_environment_serve_it_and_queues_the_next_environment(
    store: Store,
) -> None:
    new_release(store, 1, pipeline())
    first = started(store)
    outcomes.record_placed(store, first, {"endpoint": "http://127.0.0.1:1"}, "http://127.0.0.1:1")
    assert deployment(store, first).status == "checking"
    queued = outcomes.succeed(store, first)
    assert deployment(store, first).status == "succeeded"
    staging = env(store, "staging")
    assert (staging.current_release_id, staging.verified_release_id) == (1, 1)
    assert staging.healthy is True
    assert staging.url == "http://127.0.0.1:1"
    [production] = queued
    assert (deployment(store, production).environment, deployment(store, production).status) == (
        "production",
        "queued",
    )


def test_a_failure_that_took_traffic_rolls_back_to_the_verified_release(store: Store) -> None:
    new_release(store, 1, pipeline())
    placed_and_succeeded(store, started(store))
    new_release(store, 2, pipeline())
    second = started(store)
    outcomes.record_serving(store, second, {"port": 2})
    assert env(store, "staging").current_release_id == 2
    rollback = outcomes.fail(store, second, "health check failed", serving=True)
    assert rollback is not None
    back = deployment(store, rollback)
    assert (back.kind, back.status, back.release_id) == (DeploymentKind.ROLLBACK, "deploying", 1)
    assert deployment(store, second).status == "rolling_back"
    assert placed_and_succeeded(store, rollback) == []  # a rollback queues nothing further
    failed = deployment(store, second)
    assert failed.status == "rolled_back"
    assert "rolled back to r1-0000000 by deployment" in (failed.reason or "")
    assert env(store, "staging").current_release_id == 1
    assert "deployment.rolled_back" in event_types(store)


def test_a_failure_before_traffic_keeps_what_served(store: Store) -> None:
    new_release(store, 1, pipeline())
    placed_and_succeeded(store, started(store))
    new_release(store, 2, pipeline())
    second = started(store)
    assert outcomes.fail(store, second, "the target refused", serving=False) is None
    failed = deployment(store, second)
    assert failed.status == "failed"
    assert (failed.reason or "").endswith("kept serving")
    staging = env(store, "staging")
    assert (staging.current_release_id, staging.healthy, staging.held) == (1, True, False)


def test_the_hold_policy_holds_the_environment(store: Store) -> None:
    new_release(store, 1, pipeline(on_failure="hold"))
    first = started(store)
    assert outcomes.fail(store, first, "unhealthy", serving=True) is None
    assert deployment(store, first).status == "failed"
    staging = env(store, "staging")
    assert (staging.held, staging.held_by) == (True, "conveyor")
    assert "environment.held" in event_types(store)


def test_a_failed_production_deployment_opens_an_incident_its_rollback_resolves(
    store: Store,
) -> None:
    new_release(store, 1, pipeline())
    [production] = placed_and_succeeded(store, started(store))
    assert started(store, "production") == production
    placed_and_succeeded(store, production)
    new_release(store, 2, pipeline())
    placed_and_succeeded(store, started(store))
    second = started(store, "production")
    assert deployment(store, second).environment == "production"
    rollback = outcomes.fail(store, second, "5xx", serving=True)
    with store.session() as session:
        [incident] = session.scalars(select(Incident)).all()
        assert (incident.status, incident.deployment_id) == ("open", second)
    assert rollback is not None
    placed_and_succeeded(store, rollback)
    with store.session() as session:
        assert session.scalars(select(Incident.status)).all() == ["resolved"]


def test_a_failed_rollback_fails_both_and_holds_the_environment(store: Store) -> None:
    new_release(store, 1, pipeline())
    placed_and_succeeded(store, started(store))
    new_release(store, 2, pipeline())
    second = started(store)
    rollback = outcomes.fail(store, second, "unhealthy", serving=True)
    assert rollback is not None
    assert outcomes.fail(store, rollback, "would not start", serving=False) is None
    assert deployment(store, rollback).status == "failed"
    assert deployment(store, second).status == "failed"
    assert "the rollback (deployment" in (deployment(store, second).reason or "")
    assert env(store, "staging").held is True


def test_inconclusive_checks_hold_the_deployment_for_an_approval(store: Store) -> None:
    new_release(store, 1, pipeline())
    first = started(store)
    outcomes.record_placed(store, first, {}, None)
    result = {"kind": "http", "outcome": "inconclusive", "detail": "timeout"}
    approval_id = outcomes.record_checks(store, first, [result], outcomes.D.HELD)
    assert approval_id is not None
    dep = deployment(store, first)
    assert (dep.status, dep.checks) == ("held", [result])
    with store.session() as session:
        approval = session.get_one(Approval, approval_id)
        assert (approval.kind, approval.status, approval.approvers) == (
            "inconclusive",
            "pending",
            ["*"],
        )


def test_a_publication_is_recorded_once(store: Store) -> None:
    release = new_release(store, 1, pipeline(), publication="pending")
    outcomes.record_publication(store, release, {"status": "published", "ref": "oci://x"})
    outcomes.record_publication(store, release, {"status": "failed", "error": "late"})
    with store.session() as session:
        assert session.get_one(Release, release).publication == {
            "status": "published",
            "ref": "oci://x",
        }
    types = event_types(store)
    assert "release.published" in types
    assert "release.publish_failed" not in types


def test_a_restart_forgets_the_health_until_the_monitor_checks(store: Store) -> None:
    new_release(store, 1, pipeline())
    first = started(store)
    placed_and_succeeded(store, first)
    outcomes.record_restarted(store, "shop", "staging", {"port": 3})
    staging = env(store, "staging")
    assert (staging.instance, staging.healthy) == ({"port": 3}, None)
    assert deployment(store, first).instance == {"port": 3}
    assert "environment.restarted" in event_types(store)


def test_when_a_deployment_began_serving_users_is_recorded_for_dora(store: Store) -> None:
    """served_at (DORA's change failures, docs/metrics.md): a candidate stopped before the
    switch never served; one placed in place served from its placement; one switched to from
    the switch."""
    new_release(store, 1, pipeline())
    first = started(store)
    # Blue-green: placed beside what serves, checked, failed before the switch.
    outcomes.record_placed(store, first, {"port": 1}, "http://127.0.0.1:1")
    outcomes.fail(store, first, "health check failed", serving=False)
    assert deployment(store, first).served_at is None
    new_release(store, 2, pipeline())
    second = started(store)
    # In place: it takes traffic as it is placed, so a failed check afterwards is a failure
    # users met.
    outcomes.record_placed(store, second, {"port": 2}, "http://127.0.0.1:2", serving=True)
    placed = deployment(store, second).served_at
    assert placed is not None
    outcomes.fail(store, second, "health check failed", serving=True)
    assert deployment(store, second).served_at == placed
    new_release(store, 3, pipeline())
    third = started(store)
    outcomes.record_placed(store, third, {"port": 3}, "http://127.0.0.1:3")
    assert deployment(store, third).served_at is None  # checked beside, not serving yet
    outcomes.record_serving(store, third, {"port": 3})  # the switch
    switched = deployment(store, third)
    assert switched.served_at is not None
    assert switched.served_at == switched.healthy_at
