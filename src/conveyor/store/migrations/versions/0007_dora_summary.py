"""DORA summaries: an index on one service's facts of a tier; marks of what changed (per
service, from when), the summarised profiles, and each service's tally per local day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import create_table, integer, string, text, timestamp

revision = "0007"
down_revision = "0006"

# A day's counts, then its lead times, batch sizes and recovery times (sorted float64 arrays)
# and its stage sums.
DAY_COUNTS = (
    "deploys",
    "cfr_total",
    "cfr_failed",
    "rework_total",
    "rework_unplanned",
    "unrestored",
)
DAY_ARRAYS = ("leads", "batches", "recoveries", "stages")


def upgrade() -> None:
    # One service's facts of a tier, in finish order: what a summary re-tally reads.
    op.create_index(
        "ix_deployment_facts_scope", "deployment_facts", ["service", "tier", "finished_at"]
    )
    create_table(
        "dora_marks",
        string("service", 200),
        timestamp("at"),
    )
    op.create_table(
        "dora_summaries",
        sa.Column("profile", sa.String(300), primary_key=True),
        sa.Column("last_mark_id", sa.BigInteger(), nullable=False),
        timestamp("refreshed_at"),
        timestamp("used_at"),
    )
    op.create_table(
        "dora_days",
        sa.Column("profile", sa.String(300), primary_key=True),
        sa.Column("service", sa.String(200), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        text("environments"),
        text("services"),
        *(integer(name) for name in DAY_COUNTS),
        *(sa.Column(name, sa.LargeBinary(), nullable=False) for name in DAY_ARRAYS),
    )


def downgrade() -> None:
    op.drop_index("ix_deployment_facts_scope", "deployment_facts")
    op.drop_table("dora_days")
    op.drop_table("dora_summaries")
    op.drop_table("dora_marks")
