"""Web sessions: users may have a password and scopes; signed-in browsers hold a session."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import (
    create_table,
    indexes,
    json,
    reference,
    string,
    text,
    timestamp,
)

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(text("password_hash", nullable=True))
        # Users added before this revision could not sign in; read-only is the safe default.
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=False, server_default='["read"]'))
    create_table(
        "sessions",
        string("digest", 64, unique=True),
        string("user", 200, nullable=True),
        reference("token_id", "tokens", nullable=True),
        json("scopes"),
        timestamp("created_at"),
        timestamp("expires_at"),
        timestamp("last_seen_at"),
    )
    indexes("sessions", "expires_at")


def downgrade() -> None:
    op.drop_index("ix_sessions_expires_at", "sessions")
    op.drop_table("sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("scopes")
        batch.drop_column("password_hash")
