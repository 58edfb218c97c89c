"""Migration 0019 moves the deployment an imported incident names out of its JSON data into an
indexed column, so a DORA report finds such incidents by key (issue 15, item 6); a downgrade
puts the key back where the older Conveyor reads it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from conveyor.store.db import Settings as StoreSettings
from conveyor.store.db import make_engine, upgrade

OPENED = dt.datetime(2024, 3, 5, 10, 10, tzinfo=dt.UTC)


def _data(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _incidents(engine: sa.Engine) -> dict[int, tuple[Any, ...]]:
    """Each incident's data, and its deployment_key column while there is one."""
    with engine.connect() as conn:
        table = sa.Table("incidents", sa.MetaData(), autoload_with=conn)
        key = table.c.get("deployment_key")
        rows = conn.execute(
            sa.select(table.c.id, table.c.data, key if key is not None else sa.null())
        ).all()
    return {row[0]: (_data(row[1]), row[2]) for row in rows}


def test_0019_moves_the_named_deployment_to_an_indexed_column_and_back(
    tmp_path: Any, database_url: str
) -> None:
    engine = make_engine(StoreSettings(home=tmp_path, database_url=database_url))
    try:
        upgrade(engine, "0018")
        with engine.begin() as conn:
            services = sa.table(
                "services", *(sa.column(c) for c in ("id", "name", "repository", "created_at"))
            )
            conn.execute(
                services.insert(),
                [{"id": 1, "name": "shop", "repository": "/r", "created_at": OPENED}],
            )
            incidents = sa.table(
                "incidents",
                *(sa.column(c) for c in ("id", "service_id", "status", "title")),
                sa.column("source"),
                sa.column("opened_at"),
                sa.column("data", sa.JSON()),
            )
            conn.execute(
                incidents.insert(),
                [
                    {"id": 1, "service_id": 1, "status": "open", "title": "named",
                     "source": "import", "opened_at": OPENED,
                     "data": {"deployment_key": "i:shop:d1", "note": "kept"}},
                    {"id": 2, "service_id": 1, "status": "open", "title": "unnamed",
                     "source": "import", "opened_at": OPENED, "data": {}},
                    {"id": 3, "service_id": 1, "status": "open", "title": "an alert",
                     "source": "alertmanager", "opened_at": OPENED, "data": {"labels": {}}},
                ],
            )  # fmt: skip
        upgrade(engine)
        assert _incidents(engine) == {
            1: ({"note": "kept"}, "i:shop:d1"),
            2: ({}, None),
            3: ({"labels": {}}, None),
        }
        with engine.connect() as conn:
            indexed = {tuple(i["column_names"]) for i in sa.inspect(conn).get_indexes("incidents")}
        assert ("deployment_key",) in indexed

        cfg = Config()
        cfg.set_main_option("script_location", "conveyor.store:migrations")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0018")
        assert _incidents(engine) == {
            1: ({"note": "kept", "deployment_key": "i:shop:d1"}, None),
            2: ({}, None),
            3: ({"labels": {}}, None),
        }
    finally:
        engine.dispose()
