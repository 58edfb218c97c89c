"""The schema: migrations match the models, old databases are refused, events are append-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from conveyor.store.db import (
    SCHEMA_REVISION,
    SchemaOutdated,
    Settings,
    current_revision,
    make_engine,
    open_store,
    upgrade,
)
from conveyor.store.models import Base


def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")


def test_schema_revision_constant_is_the_newest_migration() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "conveyor.store:migrations")
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_migrations_produce_exactly_the_models(tmp_path: Path) -> None:
    store = open_store(settings(tmp_path))
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_new_database_is_created_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(settings(tmp_path))
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert current_revision(store.engine) == SCHEMA_REVISION


def test_outdated_database_is_refused_with_the_fix(tmp_path: Path) -> None:
    engine = make_engine(settings(tmp_path))
    upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(SchemaOutdated) as err:
        open_store(settings(tmp_path))
    assert "schema 0001" in str(err.value)
    assert "conveyor db upgrade" in str(err.value)
    upgrade(make_engine(settings(tmp_path)))
    assert current_revision(open_store(settings(tmp_path)).engine) == SCHEMA_REVISION


def test_events_cannot_be_changed_or_deleted(tmp_path: Path) -> None:
    store = open_store(settings(tmp_path))
    with store.write() as w:
        w.emit("test.happened", answer=42)
    for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    with store.session() as session:
        assert session.execute(text("SELECT type FROM events")).scalars().all() == ["test.happened"]


def test_listeners_hear_events_only_after_commit(tmp_path: Path) -> None:
    store = open_store(settings(tmp_path))
    heard: list[str] = []
    store.subscribe(lambda ev: heard.append(ev.type))

    def fail_inside_transaction() -> None:
        with store.write() as w:
            w.emit("never.committed")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_inside_transaction()
    with store.write() as w:
        w.emit("committed")
        assert heard == []
    assert heard == ["committed"]
    with store.session() as session:
        assert session.execute(text("SELECT type FROM events")).scalars().all() == ["committed"]
