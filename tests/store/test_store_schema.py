"""The schema, on SQLite and PostgreSQL: migrations match the models, old databases are refused,
events are append-only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    Store,
    current_revision,
    make_engine,
    open_store,
    upgrade,
)
from conveyor.store.models import Base


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
def opened(settings: Settings) -> Iterator[Callable[[], Store]]:
    """Opens the store as often as a test likes; every one is closed before the database goes."""
    stores: list[Store] = []

    def open_() -> Store:
        stores.append(open_store(settings))
        return stores[-1]

    yield open_
    for store in stores:
        store.close()


def test_schema_revision_constant_is_the_newest_migration() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "conveyor.store:migrations")
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_migrations_produce_exactly_the_models(opened: Callable[[], Store]) -> None:
    store = opened()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_new_database_is_created_at_the_current_schema(opened: Callable[[], Store]) -> None:
    store = opened()
    assert current_revision(store.engine) == SCHEMA_REVISION
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_outdated_database_is_refused_with_the_fix(
    settings: Settings, opened: Callable[[], Store]
) -> None:
    engine = make_engine(settings)
    try:
        upgrade(engine, "0001")
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdated) as err:
        opened()
    assert "schema 0001" in str(err.value)
    assert "conveyor db upgrade" in str(err.value)
    engine = make_engine(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    assert current_revision(opened().engine) == SCHEMA_REVISION


def test_events_cannot_be_changed_or_deleted(opened: Callable[[], Store]) -> None:
    store = opened()
    with store.write() as w:
        w.emit("test.happened", answer=42)
    for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    with store.session() as session:
        assert session.execute(text("SELECT type FROM events")).scalars().all() == ["test.happened"]


def test_listeners_hear_events_only_after_commit(opened: Callable[[], Store]) -> None:
    store = opened()
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
