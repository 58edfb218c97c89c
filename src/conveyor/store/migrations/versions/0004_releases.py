"""Releases: what a successful run yields."""

from __future__ import annotations

from alembic import op

from conveyor.store.migrations.columns import (
    create_table,
    indexes,
    json,
    reference,
    string,
    timestamp,
)

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    create_table(
        "releases",
        reference("service_id", "services"),
        reference("run_id", "runs", unique=True),
        string("sha", 64),
        string("ref", 500, nullable=True),
        timestamp("created_at"),
        json("evidence"),
    )
    indexes("releases", "service_id")


def downgrade() -> None:
    op.drop_index("ix_releases_service_id", "releases")
    op.drop_table("releases")
