"""DORA summaries: an index on one service's facts of a tier; marks of what changed (per
service, from when), the summarised profiles, and each service's tally per local day.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # One service's facts of a tier, in finish order: what a summary re-tally reads.
    op.create_index(
        "ix_deployment_facts_scope", "deployment_facts", ["service", "tier", "finished_at"]
    )
    op.create_table(
        "dora_marks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "dora_summaries",
        sa.Column("profile", sa.String(300), primary_key=True),
        sa.Column("last_mark_id", sa.BigInteger(), nullable=False),
        sa.Column("refreshed_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "dora_days",
        sa.Column("profile", sa.String(300), primary_key=True),
        sa.Column("service", sa.String(200), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("environments", sa.Text(), nullable=False),
        sa.Column("services", sa.Text(), nullable=False),
        sa.Column("deploys", sa.Integer(), nullable=False),
        sa.Column("cfr_total", sa.Integer(), nullable=False),
        sa.Column("cfr_failed", sa.Integer(), nullable=False),
        sa.Column("rework_total", sa.Integer(), nullable=False),
        sa.Column("rework_unplanned", sa.Integer(), nullable=False),
        sa.Column("unrestored", sa.Integer(), nullable=False),
        sa.Column("leads", sa.LargeBinary(), nullable=False),
        sa.Column("batches", sa.LargeBinary(), nullable=False),
        sa.Column("recoveries", sa.LargeBinary(), nullable=False),
        sa.Column("stages", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_deployment_facts_scope", "deployment_facts")
    op.drop_table("dora_days")
    op.drop_table("dora_summaries")
    op.drop_table("dora_marks")
