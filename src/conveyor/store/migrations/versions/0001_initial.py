"""The release record's first tables: services, runs, jobs, steps, logs, artifacts, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("service", sa.String(200), nullable=True),
        sa.Column("run_id", Id, nullable=True),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_run", "events", ["run_id", "id"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_table(
        "services",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("repository", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("service_id", Id, sa.ForeignKey("services.id"), nullable=False),
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
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "jobs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", Id, sa.ForeignKey("runs.id"), nullable=False),
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
    op.create_index("ix_jobs_run_id", "jobs", ["run_id"])
    op.create_table(
        "steps",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_steps_job_id", "steps", ["job_id"])
    op.create_table(
        "log_lines",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("step_position", sa.Integer(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_id", "seq", name="uq_log_lines_job_seq"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", Id, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])


def downgrade() -> None:
    for table in ("artifacts", "log_lines", "steps", "jobs", "runs", "services", "events"):
        op.drop_table(table)
