"""Releases: what a successful run yields."""

from __future__ import annotations

from alembic import op

from conveyor.store.migrations.columns import id_column, indexes, json, reference, string, timestamp

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "releases",
        id_column(),
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
