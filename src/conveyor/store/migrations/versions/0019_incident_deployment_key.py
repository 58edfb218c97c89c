"""The deployment an imported incident names, as a column (issue 15, item 6).

An imported incident may name an imported deployment by its fact key ("i:<service>:<id>");
until now the key sat in the incident's JSON data, where no index reaches it, so a DORA report
looked for such incidents among every incident of the services deployed in its span. As a
column with an index, each report finds them by the keys of its deployments. The key moves
out of the data (downgrade puts it back).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"

BATCH = 1000
INCIDENTS = sa.table(
    "incidents",
    sa.column("id", sa.Integer()),
    sa.column("source", sa.String()),
    sa.column("data", sa.JSON()),
    sa.column("deployment_key", sa.String()),
)


def _data(value: Any) -> dict[str, Any]:
    found = json.loads(value) if isinstance(value, str | bytes) else value
    return found if isinstance(found, dict) else {}


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("deployment_key", sa.String(300), nullable=True))
        batch.create_index("ix_incidents_deployment_key", ["deployment_key"])
    bind = op.get_bind()
    t = INCIDENTS
    rows = bind.execute(
        sa.select(t.c.id, t.c.data).where(t.c.source == "import").order_by(t.c.id)
    ).all()
    moved = []
    for row_id, value in rows:
        data = _data(value)
        key = data.pop("deployment_key", None)
        if key:
            moved.append({"row": row_id, "key": str(key), "new_data": data})
    change = (
        sa.update(t)
        .where(t.c.id == sa.bindparam("row"))
        .values(deployment_key=sa.bindparam("key"), data=sa.bindparam("new_data", type_=sa.JSON()))
    )
    for start in range(0, len(moved), BATCH):
        bind.execute(change, moved[start : start + BATCH])


def downgrade() -> None:
    bind = op.get_bind()
    t = INCIDENTS
    rows = bind.execute(
        sa.select(t.c.id, t.c.data, t.c.deployment_key).where(t.c.deployment_key.is_not(None))
    ).all()
    back = [
        {"row": row_id, "new_data": {**_data(value), "deployment_key": key}}
        for row_id, value, key in rows
    ]
    change = (
        sa.update(t)
        .where(t.c.id == sa.bindparam("row"))
        .values(data=sa.bindparam("new_data", type_=sa.JSON()))
    )
    for start in range(0, len(back), BATCH):
        bind.execute(change, back[start : start + BATCH])
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_deployment_key")
        batch.drop_column("deployment_key")
