"""Secrets scoped to a service and an environment, sealed with the key file.

Only the schema changes here. Webhook secrets stored in clear by earlier versions are sealed
when a server starts (store.vault.on_server_start), not by this migration: a migration may run
on a machine that is not the server's (`conveyor db upgrade` against PostgreSQL), where a new
key file would be one the servers do not have.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import create_table, string, text, timestamp

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    create_table(
        "secrets",
        string("service", 200),
        # "" for a secret of every environment of the service.
        string("environment", 200),
        string("name", 200),
        text("value"),
        timestamp("created_at"),
        timestamp("updated_at"),
        string("updated_by", 200, nullable=True),
        sa.UniqueConstraint("service", "environment", "name", name="uq_secrets_scope_name"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
