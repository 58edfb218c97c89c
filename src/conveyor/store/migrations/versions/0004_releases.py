"""Releases: what a successful run yields.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("service_id", Id, sa.ForeignKey("services.id"), nullable=False),
        sa.Column("run_id", Id, sa.ForeignKey("runs.id"), nullable=False, unique=True),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
    )
    op.create_index("ix_releases_service_id", "releases", ["service_id"])


def downgrade() -> None:
    op.drop_index("ix_releases_service_id", "releases")
    op.drop_table("releases")
