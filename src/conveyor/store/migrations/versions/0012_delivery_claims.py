"""Deliveries are claimed before they are turned into runs (docs/decisions/0012-exactly-once.md).

A server takes a received delivery with one conditional UPDATE (status received -> claimed,
stamped with the database's clock); a claim left by a server that died is taken over once it
is older than the claim timeout.
"""

from __future__ import annotations

from alembic import op

from conveyor.store.migrations.columns import timestamp

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.add_column("deliveries", timestamp("claimed_at", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claimed_at")
