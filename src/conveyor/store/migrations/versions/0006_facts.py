"""DORA facts: deployment and change facts (own and imported); incidents' external ids;
event cursors for consumers of the event log.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import Id, id_column, indexes, reference
from conveyor.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "deployment_facts",
        id_column(),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=True),
        sa.Column("rollback_of", sa.String(300), nullable=True),
        sa.Column("fixes_incident", sa.Boolean(), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("deployment_id", Id, nullable=True),
    )
    op.create_index("ix_deployment_facts_window", "deployment_facts", ["tier", "finished_at"])
    op.create_index("ix_deployment_facts_service", "deployment_facts", ["service", "finished_at"])
    op.create_table(
        "change_facts",
        id_column(),
        reference("fact_id", "deployment_facts"),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=False),
        sa.Column("authored_at", UTCDateTime(), nullable=True),
        sa.Column("seen_at", UTCDateTime(), nullable=True),
    )
    indexes("change_facts", "fact_id")
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("failed_at", UTCDateTime(), nullable=True))
    op.create_table(
        "event_cursors",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("external_id", sa.String(300), nullable=True))
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
