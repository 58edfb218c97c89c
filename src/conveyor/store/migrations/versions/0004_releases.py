"""Releases: what a successful run yields."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import id_column, indexes, reference
from conveyor.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "releases",
        id_column(),
        reference("service_id", "services"),
        reference("run_id", "runs", unique=True),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
    )
    indexes("releases", "service_id")


def downgrade() -> None:
    op.drop_index("ix_releases_service_id", "releases")
    op.drop_table("releases")
