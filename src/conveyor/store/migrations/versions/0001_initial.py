"""The release record's first tables: services, runs, jobs, steps, logs, artifacts, events."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import (
    create_table,
    flag,
    indexes,
    integer,
    json,
    reference,
    row_id,
    string,
    text,
    timestamp,
)

revision = "0001"
down_revision = None


def upgrade() -> None:
    create_table(
        "events",
        timestamp("ts"),
        string("type", 100),
        string("service", 200, nullable=True),
        row_id("run_id"),
        row_id("job_id"),
        json("data"),
    )
    op.create_index("ix_events_run", "events", ["run_id", "id"])
    indexes("events", "type")
    create_table(
        "services",
        string("name", 200, unique=True),
        text("repository"),
        timestamp("created_at"),
    )
    create_table(
        "runs",
        reference("service_id", "services"),
        string("status", 20),
        text("reason", nullable=True),
        string("sha", 64),
        string("ref", 500, nullable=True),
        string("trigger", 50),
        json("commit"),
        json("pipeline"),
        timestamp("created_at"),
        timestamp("started_at", nullable=True),
        timestamp("finished_at", nullable=True),
        string("owner", 300, nullable=True),
        timestamp("heartbeat_at", nullable=True),
        flag("cancel_requested"),
    )
    indexes("runs", "status")
    create_table(
        "jobs",
        reference("run_id", "runs"),
        string("name", 200),
        integer("position"),
        string("status", 20),
        text("reason", nullable=True),
        json("needs"),
        json("config"),
        timestamp("started_at", nullable=True),
        timestamp("finished_at", nullable=True),
        string("runner", 300, nullable=True),
        integer("lease_token"),
        timestamp("lease_expires_at", nullable=True),
        sa.UniqueConstraint("run_id", "name"),
    )
    indexes("jobs", "run_id")
    create_table(
        "steps",
        reference("job_id", "jobs"),
        integer("position"),
        string("name", 500),
        string("status", 20),
        text("reason", nullable=True),
        integer("exit_code", nullable=True),
        integer("attempts"),
        timestamp("started_at", nullable=True),
        timestamp("finished_at", nullable=True),
    )
    indexes("steps", "job_id")
    create_table(
        "log_lines",
        reference("job_id", "jobs"),
        integer("step_position", nullable=True),
        integer("seq"),
        timestamp("ts"),
        text("text"),
        sa.UniqueConstraint("job_id", "seq", name="uq_log_lines_job_seq"),
    )
    create_table(
        "artifacts",
        reference("run_id", "runs"),
        reference("job_id", "jobs"),
        text("path"),
        string("digest", 80),
        sa.Column("size", sa.BigInteger(), nullable=False),
        timestamp("created_at"),
    )
    indexes("artifacts", "run_id")


def downgrade() -> None:
    for table in ("artifacts", "log_lines", "steps", "jobs", "runs", "services", "events"):
        op.drop_table(table)
