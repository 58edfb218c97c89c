"""The release record's first tables: services, runs, jobs, steps, logs, artifacts, events."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import Id, id_column, indexes, reference
from conveyor.store.models import UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "events",
        id_column(),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("service", sa.String(200), nullable=True),
        sa.Column("run_id", Id, nullable=True),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_run", "events", ["run_id", "id"])
    indexes("events", "type")
    op.create_table(
        "services",
        id_column(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("repository", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "runs",
        id_column(),
        reference("service_id", "services"),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(500), nullable=True),
        sa.Column("trigger", sa.String(50), nullable=False),
        sa.Column("commit", sa.JSON(), nullable=False),
        sa.Column("pipeline", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("owner", sa.String(300), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    )
    indexes("runs", "status")
    op.create_table(
        "jobs",
        id_column(),
        reference("run_id", "runs"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("needs", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("runner", sa.String(300), nullable=True),
        sa.Column("lease_token", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("run_id", "name"),
    )
    indexes("jobs", "run_id")
    op.create_table(
        "steps",
        id_column(),
        reference("job_id", "jobs"),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    indexes("steps", "job_id")
    op.create_table(
        "log_lines",
        id_column(),
        reference("job_id", "jobs"),
        sa.Column("step_position", sa.Integer(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_id", "seq", name="uq_log_lines_job_seq"),
    )
    op.create_table(
        "artifacts",
        id_column(),
        reference("run_id", "runs"),
        reference("job_id", "jobs"),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    indexes("artifacts", "run_id")


def downgrade() -> None:
    for table in ("artifacts", "log_lines", "steps", "jobs", "runs", "services", "events"):
        op.drop_table(table)
