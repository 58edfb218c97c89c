"""A real store, the connectors file, and what the store holds after a sync."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.connectors.config import Configured
from conveyor.connectors.sync import configured
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import ChangeFactRow, DeploymentFactRow, Incident


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    """A new store on SQLite, and on PostgreSQL (tests marked postgres)."""
    s = open_store(Settings(home=tmp_path / "store", database_url=database_url))
    yield s
    s.close()


def connector(store: Store, name: str, yaml_text: str) -> Configured:
    """Write the connectors file (connectors.yml in the data directory) and read it back."""
    store.home.mkdir(parents=True, exist_ok=True)
    (store.home / "connectors.yml").write_text(yaml_text, encoding="utf-8")
    return configured(store)[name]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def deployments(store: Store) -> dict[str, tuple[str, str, dt.datetime, dt.datetime]]:
    """Key → (environment, result, started, finished) of every deployment fact."""
    with store.session() as session:
        return {
            row.key: (row.environment, row.result, row.started_at, row.finished_at)
            for row in session.scalars(select(DeploymentFactRow))
        }


def changes(store: Store, key: str) -> list[tuple[str, dt.datetime]]:
    with store.session() as session:
        rows = session.execute(
            select(ChangeFactRow.sha, ChangeFactRow.committed_at)
            .join(DeploymentFactRow, DeploymentFactRow.id == ChangeFactRow.fact_id)
            .where(DeploymentFactRow.key == key)
            .order_by(ChangeFactRow.committed_at)
        ).all()
        return [(sha, when) for sha, when in rows]


def incidents(store: Store) -> dict[str, tuple[str, dt.datetime, dt.datetime | None]]:
    """External id → (status, opened, resolved) of every incident."""
    with store.session() as session:
        return {
            str(row.external_id): (row.status, row.opened_at, row.resolved_at)
            for row in session.scalars(select(Incident))
        }
