"""Alembic environment: always driven from Conveyor with an open connection."""

from __future__ import annotations

from alembic import context

from conveyor.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by hand-run alembic commands
    raise SystemExit("run migrations with `conveyor db upgrade`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
