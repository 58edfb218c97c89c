"""Two servers delivering on one database never carry out two deployments in one environment:
the database refuses the second claim (a unique partial index), whatever the timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from conveyor.engine.monitoring import lease
from conveyor.engine.promotion import queue_deployment, start_next
from conveyor.engine.runs import create_run
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Deployment, EnvironmentState, Release, Run, utcnow

PIPELINE = {
    "service": "shop",
    "jobs": {"test": {"run": "true"}},
    "environments": {"staging": {"deploy": {"start": "true"}}},
}


@pytest.fixture
def stores(tmp_path: Path, database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two servers' stores on one database."""
    one = open_store(Settings(home=tmp_path / "one", database_url=database_url))
    two = open_store(Settings(home=tmp_path / "two", database_url=database_url))
    yield one, two
    one.close()
    two.close()


def releases(store: Store, count: int) -> list[int]:
    ids = []
    for n in range(count):
        run_id = create_run(
            store,
            service="shop",
            repository="/srv/shop.git",
            sha=f"{n:040x}",
            ref="refs/heads/main",
            trigger="manual",
            commit={},
            pipeline=PIPELINE,
            jobs=[],
            owner=None,
        )
        with store.write() as w:
            run = w.session.get_one(Run, run_id)
            release = Release(service_id=run.service_id, run_id=run_id, sha=run.sha)
            release.publication = {"status": "none"}
            w.session.add(release)
            w.session.flush()
            queue_deployment(w, release, "staging", "staging", trigger="auto", by=None)
            ids.append(release.id)
    return ids


def executing(store: Store) -> list[int]:
    with store.session() as session:
        return list(
            session.scalars(
                select(Deployment.id).where(
                    Deployment.status.in_(["deploying", "checking", "verifying", "held"])
                )
            )
        )


def test_a_second_claim_is_an_integrity_error(stores: tuple[Store, Store]) -> None:
    one, two = stores
    releases(one, 2)
    with one.session() as session:
        first, second = session.scalars(select(Deployment.id).order_by(Deployment.id)).all()
    with one.write() as w:
        w.session.get_one(Deployment, first).status = "deploying"
    with pytest.raises(IntegrityError), two.write() as w:
        w.session.get_one(Deployment, second).status = "checking"
    assert executing(one) == [first]


def test_two_servers_racing_start_one_deployment_at_a_time(
    stores: tuple[Store, Store],
) -> None:
    one, _ = stores
    releases(one, 6)
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def server(index: int, store: Store) -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            claimed[index] += [s.deployment_id for s in start_next(store, f"server-{index}")]

    threads = [threading.Thread(target=server, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(claimed[0]) + len(claimed[1]) == 1
    assert len(executing(one)) == 1


def test_one_server_watches_an_environment(stores: tuple[Store, Store]) -> None:
    one, two = stores
    [release_id] = releases(one, 1)
    with one.write() as w:
        dep = w.session.scalars(select(Deployment)).one()
        dep.status = "succeeded"
        env = w.session.scalars(select(EnvironmentState)).one()
        env.current_release_id, env.current_deployment_id = release_id, dep.id
        env.instance = {"pid": 1}
    assert len(lease(one, "server-1", 15)) == 1
    assert lease(two, "server-2", 15) == []
    assert len(lease(one, "server-1", 15)) == 1  # renewed by its holder
    later = utcnow().replace(year=utcnow().year + 1)
    assert len(lease(two, "server-2", 15, now=later)) == 1  # expired: taken over
