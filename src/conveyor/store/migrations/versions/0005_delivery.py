"""Delivery: deployments, environments, approvals, incidents, users, the notification outbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import Id, id_column, indexes, reference
from conveyor.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("publication", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "deployments",
        id_column(),
        reference("service_id", "services"),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(50), nullable=False),
        reference("release_id", "releases"),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(30), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=True),
        sa.Column("previous_release_id", Id, nullable=True),
        sa.Column("rollback_of", Id, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("healthy_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("instance", sa.JSON(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(300), nullable=True),
    )
    indexes("deployments", "service_id", "release_id", "status")
    op.create_index("ix_deployments_env", "deployments", ["service_id", "environment", "id"])
    op.create_table(
        "environments",
        id_column(),
        reference("service_id", "services"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(50), nullable=False),
        sa.Column("current_release_id", Id, nullable=True),
        sa.Column("current_deployment_id", Id, nullable=True),
        sa.Column("verified_release_id", Id, nullable=True),
        sa.Column("instance", sa.JSON(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("healthy", sa.Boolean(), nullable=True),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("held_by", sa.String(200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("service_id", "name", name="uq_environments_name"),
    )
    op.create_table(
        "approvals",
        id_column(),
        reference("deployment_id", "deployments"),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("self_approval", sa.Boolean(), nullable=False),
        sa.Column("excluded", sa.JSON(), nullable=False),
        sa.Column("on_timeout", sa.String(20), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    indexes("approvals", "deployment_id", "status", "deadline")
    op.create_table(
        "approval_decisions",
        id_column(),
        reference("approval_id", "approvals"),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("approval_id", "user", name="uq_approval_decisions_user"),
    )
    indexes("approval_decisions", "approval_id")
    op.create_table(
        "incidents",
        id_column(),
        reference("service_id", "services"),
        sa.Column("environment", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("source", sa.String(30), nullable=False),
        sa.Column("deployment_id", Id, nullable=True),
        sa.Column("release_id", Id, nullable=True),
        sa.Column("fingerprint", sa.String(200), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    indexes("incidents", "service_id", "status", "deployment_id", "fingerprint")
    op.create_table(
        "users",
        id_column(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("slack_id", sa.String(50), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "notifications",
        id_column(),
        reference("service_id", "services"),
        sa.Column("event", sa.String(50), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("notifier", sa.JSON(), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
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
