"""DORA facts: deployment and change facts (own and imported); incidents' external ids;
event cursors for consumers of the event log.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import (
    create_table,
    flag,
    indexes,
    json,
    reference,
    row_id,
    string,
    timestamp,
)

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    create_table(
        "deployment_facts",
        string("key", 300, unique=True),
        string("source", 20),
        string("service", 200),
        string("environment", 200),
        string("tier", 50),
        string("kind", 20),
        string("result", 20),
        string("sha", 64),
        timestamp("started_at"),
        timestamp("finished_at"),
        timestamp("failed_at", nullable=True),
        string("rollback_of", 300, nullable=True),
        flag("fixes_incident"),
        json("stages"),
        row_id("deployment_id"),
    )
    op.create_index("ix_deployment_facts_window", "deployment_facts", ["tier", "finished_at"])
    op.create_index("ix_deployment_facts_service", "deployment_facts", ["service", "finished_at"])
    create_table(
        "change_facts",
        reference("fact_id", "deployment_facts"),
        string("sha", 64),
        timestamp("committed_at"),
        timestamp("authored_at", nullable=True),
        timestamp("seen_at", nullable=True),
    )
    indexes("change_facts", "fact_id")
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(timestamp("failed_at", nullable=True))
    op.create_table(
        "event_cursors",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        timestamp("updated_at"),
    )
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(string("external_id", 300, nullable=True))
        batch.create_index("ix_incidents_external_id", ["external_id"])


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_external_id")
        batch.drop_column("external_id")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("failed_at")
    op.drop_table("event_cursors")
    op.drop_table("change_facts")
    op.drop_table("deployment_facts")
