"""Connectors' cursors (issue 15, item 5; docs/import.md "Connectors").

One row per connector of the connectors file: what its next pull asks for, and how its last
sync went. Tokens are not here: they are sealed secrets of the scope ``connector:<name>``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.create_table(
        "connector_states",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("connector_states")
