"""The shapes the migrations share: the id type, the key most tables begin with, references to
another table's id, and one index per column.

Migrations are history: every schema they produced must stay what it was, so a helper here that
a migration uses is never changed, only joined by a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column[int]:
    """The surrogate key most tables begin with."""
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def reference(
    name: str, table: str, *, nullable: bool = False, unique: bool | None = None
) -> sa.Column[int]:
    """A column holding the id of a row of ``table``, with its foreign key."""
    return sa.Column(name, Id, sa.ForeignKey(f"{table}.id"), nullable=nullable, unique=unique)


def indexes(table: str, *columns: str) -> None:
    """One index per column, each named ``ix_<table>_<column>``."""
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])
