"""The server: API tokens, webhook deliveries, service settings, queues and runner reports."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import (
    create_table,
    indexes,
    json,
    row_id,
    string,
    text,
    timestamp,
)

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    create_table(
        "tokens",
        string("name", 200, unique=True),
        string("token_hash", 64, unique=True),
        string("prefix", 16),
        json("scopes"),
        string("user", 200, nullable=True),
        timestamp("created_at"),
        timestamp("last_used_at", nullable=True),
        timestamp("revoked_at", nullable=True),
    )
    create_table(
        "deliveries",
        string("source", 50),
        string("delivery_id", 200),
        string("service", 200),
        timestamp("received_at"),
        string("status", 20),
        text("reason", nullable=True),
        json("payload"),
        row_id("run_id"),
        sa.UniqueConstraint("source", "delivery_id", name="uq_deliveries_source_id"),
    )
    indexes("deliveries", "status")
    with op.batch_alter_table("services") as batch:
        batch.add_column(text("webhook_secret", nullable=True))
        batch.add_column(
            sa.Column("allow_unsigned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("poll_interval", sa.Float(), nullable=True))
        batch.add_column(timestamp("polled_at", nullable=True))
        batch.add_column(
            sa.Column("poll_state", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(string("concurrency_group", 300, nullable=True))
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
