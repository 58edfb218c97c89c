"""Bounded log storage (issue 13, docs/decisions/0016-bounded-storage.md).

Each log line names the attempt that wrote it (a job leased again after its runner was lost
logs as attempt 2, 3...). Each job counts the bytes of log it has stored, and one row of
``store_usage`` counts them all, so that the server-wide ceiling is checked with one
conditional UPDATE. Both counts are derived here from the lines already stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


# The bytes (UTF-8) of each job's stored lines.
SQLITE_JOB_BYTES = (
    "UPDATE jobs SET log_bytes = COALESCE((SELECT SUM(length(CAST(text AS BLOB))) "
    "FROM log_lines WHERE log_lines.job_id = jobs.id), 0)"
)
POSTGRES_JOB_BYTES = (
    "UPDATE jobs SET log_bytes = COALESCE((SELECT SUM(octet_length(text)) "
    "FROM log_lines WHERE log_lines.job_id = jobs.id), 0)"
)


def upgrade() -> None:
    with op.batch_alter_table("log_lines") as batch:
        batch.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("log_bytes", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("log_dropped", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    op.create_table(
        "store_usage",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(POSTGRES_JOB_BYTES if postgres else SQLITE_JOB_BYTES)
    op.execute(
        "INSERT INTO store_usage (name, bytes) SELECT 'logs', COALESCE(SUM(log_bytes), 0) FROM jobs"
    )


def downgrade() -> None:
    op.drop_table("store_usage")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log_dropped")
        batch.drop_column("log_bytes")
    with op.batch_alter_table("log_lines") as batch:
        batch.drop_column("attempt")
