"""Continuous health and crash-safe delivery (issue 13).

The monitor's last look at each environment and its lease (which server watches it), and a
unique partial index that lets at most one deployment per environment be carried out at a
time, whichever server claims it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import string, text, timestamp
from conveyor.store.models import EXECUTING_SQL

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(timestamp("checked_at", nullable=True))
        batch.add_column(text("health_detail", nullable=True))
        batch.add_column(string("monitor_owner", 300, nullable=True))
        batch.add_column(timestamp("monitor_until", nullable=True))
    op.create_index(
        "uq_deployments_executing",
        "deployments",
        ["service_id", "environment"],
        unique=True,
        postgresql_where=sa.text(EXECUTING_SQL),
        sqlite_where=sa.text(EXECUTING_SQL),
    )


def downgrade() -> None:
    op.drop_index("uq_deployments_executing", table_name="deployments")
    with op.batch_alter_table("environments") as batch:
        for column in ("monitor_until", "monitor_owner", "health_detail", "checked_at"):
            batch.drop_column(column)
