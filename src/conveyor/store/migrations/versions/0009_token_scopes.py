"""Scopes limited to services and environments: tokens, users (their sessions) and runner
tokens (also to labels). An empty list means "every one", so existing rows keep what they had.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("services", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("environments", sa.JSON(), nullable=False, server_default="[]"))
        # Runner tokens only: the labels every job they lease must ask for.
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("services", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("environments", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("services", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("environments", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    for table in ("sessions", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("environments")
            batch.drop_column("services")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("labels")
        batch.drop_column("environments")
        batch.drop_column("services")
