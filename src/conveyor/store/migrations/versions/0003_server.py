"""The server: API tokens, webhook deliveries, service settings, queues and runner reports."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import Id, id_column, indexes
from conveyor.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "tokens",
        id_column(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("user", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "deliveries",
        id_column(),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("run_id", Id, nullable=True),
        sa.UniqueConstraint("source", "delivery_id", name="uq_deliveries_source_id"),
    )
    indexes("deliveries", "status")
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("allow_unsigned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("poll_interval", sa.Float(), nullable=True))
        batch.add_column(sa.Column("polled_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("poll_state", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("concurrency_group", sa.String(300), nullable=True))
        batch.create_index("ix_runs_concurrency_group", ["concurrency_group"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("report_seq", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    indexes("jobs", "status", "lease_expires_at")


def downgrade() -> None:
    op.drop_index("ix_jobs_lease_expires_at", "jobs")
    op.drop_index("ix_jobs_status", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("report_seq")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_concurrency_group")
        batch.drop_column("concurrency_group")
    with op.batch_alter_table("services") as batch:
        for column in (
            "poll_state",
            "polled_at",
            "poll_interval",
            "allow_unsigned",
            "webhook_secret",
        ):
            batch.drop_column(column)
    op.drop_table("deliveries")
    op.drop_table("tokens")
