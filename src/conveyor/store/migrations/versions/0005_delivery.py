"""Delivery: deployments, environments, approvals, incidents, users, the notification outbox."""

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

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("publication", sa.JSON(), nullable=False, server_default="{}"))
    create_table(
        "deployments",
        reference("service_id", "services"),
        string("environment", 200),
        string("tier", 50),
        reference("release_id", "releases"),
        string("kind", 20),
        string("status", 30),
        text("reason", nullable=True),
        string("trigger", 30),
        string("requested_by", 200, nullable=True),
        row_id("previous_release_id"),
        row_id("rollback_of"),
        timestamp("created_at"),
        timestamp("started_at", nullable=True),
        timestamp("healthy_at", nullable=True),
        timestamp("finished_at", nullable=True),
        json("checks"),
        json("log"),
        json("instance"),
        text("url", nullable=True),
        string("owner", 300, nullable=True),
    )
    indexes("deployments", "service_id", "release_id", "status")
    op.create_index("ix_deployments_env", "deployments", ["service_id", "environment", "id"])
    create_table(
        "environments",
        reference("service_id", "services"),
        string("name", 200),
        string("tier", 50),
        row_id("current_release_id"),
        row_id("current_deployment_id"),
        row_id("verified_release_id"),
        json("instance"),
        text("url", nullable=True),
        flag("healthy", nullable=True),
        timestamp("since", nullable=True),
        flag("held"),
        text("hold_reason", nullable=True),
        string("held_by", 200, nullable=True),
        timestamp("updated_at"),
        sa.UniqueConstraint("service_id", "name", name="uq_environments_name"),
    )
    create_table(
        "approvals",
        reference("deployment_id", "deployments"),
        string("kind", 20),
        string("status", 20),
        json("approvers"),
        integer("required"),
        flag("self_approval"),
        json("excluded"),
        string("on_timeout", 20),
        timestamp("requested_at"),
        timestamp("deadline", nullable=True),
        timestamp("decided_at", nullable=True),
        text("reason", nullable=True),
    )
    indexes("approvals", "deployment_id", "status", "deadline")
    create_table(
        "approval_decisions",
        reference("approval_id", "approvals"),
        string("user", 200),
        string("decision", 20),
        text("reason", nullable=True),
        string("via", 20),
        timestamp("at"),
        sa.UniqueConstraint("approval_id", "user", name="uq_approval_decisions_user"),
    )
    indexes("approval_decisions", "approval_id")
    create_table(
        "incidents",
        reference("service_id", "services"),
        string("environment", 200, nullable=True),
        string("status", 20),
        text("title"),
        string("source", 30),
        row_id("deployment_id"),
        row_id("release_id"),
        string("fingerprint", 200, nullable=True),
        timestamp("opened_at"),
        timestamp("resolved_at", nullable=True),
        text("resolved_by", nullable=True),
        json("data"),
    )
    indexes("incidents", "service_id", "status", "deployment_id", "fingerprint")
    create_table(
        "users",
        string("name", 200, unique=True),
        json("emails"),
        json("groups"),
        string("slack_id", 50, nullable=True),
        timestamp("created_at"),
    )
    create_table(
        "notifications",
        reference("service_id", "services"),
        string("event", 50),
        string("channel", 20),
        json("notifier"),
        json("notice"),
        string("status", 20),
        integer("attempts"),
        text("error", nullable=True),
        timestamp("created_at"),
        timestamp("sent_at", nullable=True),
    )
    indexes("notifications", "status")


def downgrade() -> None:
    for table in (
        "notifications",
        "users",
        "incidents",
        "approval_decisions",
        "approvals",
        "environments",
        "deployments",
    ):
        op.drop_table(table)
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("publication")
