"""Migration 0014 (DORA's definitions of 2024) fills in whether each recorded deployment served
users, from what Conveyor recorded before it knew to ask, and drops the DORA summaries so that
every old figure is recomputed (decision 0018)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from tests.store.test_upgrade_history import history, insert, make_repo

from conveyor.metrics import load
from conveyor.metrics.backfill import backfill_facts
from conveyor.metrics.dora import Settings as DoraSettings
from conveyor.metrics.dora import Window
from conveyor.store.db import Settings, make_engine, open_store, upgrade

FAILED_AT = dt.datetime(2024, 3, 12, 11, 4, tzinfo=dt.UTC)


def test_0014_marks_a_candidate_stopped_before_the_switch_as_never_served(tmp_path: Path) -> None:
    repo, gone = tmp_path / "repo", tmp_path / "gone"
    rows = history(repo, gone, make_repo(repo))
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'old.db'}")
    engine = make_engine(settings)
    try:
        for revision in [f"{n:04d}" for n in range(1, 14)]:
            upgrade(engine, revision)
            for since, table, batch in rows:
                if since == revision:
                    insert(engine, table, batch)
        with engine.begin() as conn:
            # Deployment 9 failed in place ("unhealthy": it had replaced what served). Make 10
            # a blue-green candidate stopped by its check: the controller wrote "kept serving".
            conn.execute(
                sa.text("UPDATE deployments SET failed_at = :at WHERE id = 9"), {"at": FAILED_AT}
            )
            conn.execute(
                sa.text(
                    "INSERT INTO deployments (id, service_id, environment, tier, release_id, kind, "
                    "status, reason, trigger, created_at, started_at, finished_at, failed_at, "
                    "checks, log, instance) SELECT 10, service_id, environment, tier, release_id, "
                    "kind, 'failed', 'health check failed; r3 kept serving', trigger, created_at, "
                    "started_at, finished_at, failed_at, checks, log, instance FROM deployments "
                    "WHERE id = 9"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            served = dict(conn.execute(sa.text("SELECT id, served_at FROM deployments")).all())
            healthy = dict(conn.execute(sa.text("SELECT id, healthy_at FROM deployments")).all())
    finally:
        engine.dispose()
    # Healthy ones served from when they became healthy; 5 (rolled back) and 9 (failed in
    # place) from their failure; 10 never served.
    assert served[2] == healthy[2]
    assert served[9] is not None
    assert served[5] is not None
    assert served[10] is None

    store = open_store(settings)
    try:
        backfill_facts(store)
        window = Window(dt.date(2024, 3, 1), dt.date(2024, 4, 1))
        m = load.report(store, window, DoraSettings()).to_json()["metrics"]
    finally:
        store.close()
    # Production: 5 (rolled back), 8 (an incident) and 9 (failed in place) are change
    # failures, as before the upgrade; 10 never served: caught, not a fourth failure.
    assert m["caught_before_traffic"]["caught"] == 1
    assert (m["change_failure_rate"]["failed"], m["change_failure_rate"]["deployments"]) == (3, 5)
