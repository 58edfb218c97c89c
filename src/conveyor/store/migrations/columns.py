"""The shapes the migrations share: the id type, the key most tables begin with, references to
another table's id, columns of the types the tables use, and one index per column.

Migrations are history: every schema they produced must stay what it was, so a helper here that
a migration uses is never changed, only joined by a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.models import UTCDateTime

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column[int]:
    """The surrogate key most tables begin with."""
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def create_table(name: str, *columns: sa.schema.SchemaItem) -> None:
    """Create table ``name`` beginning with the surrogate key (`id_column`), then ``columns``."""
    op.create_table(name, id_column(), *columns)


def reference(
    name: str, table: str, *, nullable: bool = False, unique: bool | None = None
) -> sa.Column[int]:
    """A column holding the id of a row of ``table``, with its foreign key."""
    return sa.Column(name, Id, sa.ForeignKey(f"{table}.id"), nullable=nullable, unique=unique)


def row_id(name: str) -> sa.Column[int]:
    """A column that may hold the id of another row, without a foreign key."""
    return sa.Column(name, Id, nullable=True)


def string(
    name: str, length: int, *, nullable: bool = False, unique: bool | None = None
) -> sa.Column[str]:
    """A column of text at most ``length`` characters long."""
    return sa.Column(name, sa.String(length), nullable=nullable, unique=unique)


def text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    """A column of text of any length."""
    return sa.Column(name, sa.Text(), nullable=nullable)


def integer(name: str, *, nullable: bool = False) -> sa.Column[int]:
    """A column of whole numbers."""
    return sa.Column(name, sa.Integer(), nullable=nullable)


def flag(name: str, *, nullable: bool = False) -> sa.Column[bool]:
    """A boolean column."""
    return sa.Column(name, sa.Boolean(), nullable=nullable)


def timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    """A point in time, stored in UTC."""
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def json(name: str) -> sa.Column[object]:
    """A required JSON document."""
    return sa.Column(name, sa.JSON(), nullable=False)


def indexes(table: str, *columns: str) -> None:
    """One index per column, each named ``ix_<table>_<column>``."""
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])
