"""Statements as the store sends them, and their plans: for tests that check a read finds its
rows through an index (tests/metrics/test_dora_plans.py, tests/server/test_log_pages.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from conveyor.store.db import Store


@contextmanager
def captured(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The statements sent through the store's engines meanwhile, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def heard(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many:
            sent.append((statement, params))

    engines: list[Engine] = list({id(e): e for e in (store.engine, store._write_engine)}.values())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", heard)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", heard)


def planned(statement: str) -> bool:
    """Whether the statement reads rows (and so has a plan worth checking)."""
    head = statement.lstrip().split(None, 1)[0].upper()
    if head == "INSERT":
        return " SELECT " in statement.upper()
    return head in ("SELECT", "WITH", "UPDATE", "DELETE")


def plan_steps(
    store: Store, statement: str, params: Any, priced_out: Sequence[str] = ()
) -> list[str]:
    """The statement's plan, a step a line. SQLite: EXPLAIN QUERY PLAN's details ("SCAN t"
    reads t whole, through an index or not; "SEARCH t ..." a range of it; "USE TEMP B-TREE FOR
    ORDER BY" a sort). PostgreSQL: each node of EXPLAIN as "Node Type relation" ("Seq Scan t",
    "Sort"), planned with the methods `priced_out` (e.g. "seqscan") set off."""
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if store.engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            steps = [str(row[3]) for row in cursor.fetchall()]
        else:
            for method in priced_out:
                cursor.execute(f"SET enable_{method} = off")
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            steps = list(_nodes(cursor.fetchone()[0][0]["Plan"]))
        raw.rollback()
    finally:
        raw.close()
    return steps


def _nodes(node: dict[str, Any]) -> Iterator[str]:
    yield f"{node['Node Type']} {node.get('Relation Name', '')}".strip()
    for child in node.get("Plans", []):
        yield from _nodes(child)


def faults(
    store: Store, sent: list[tuple[str, Any]], faults_of: Callable[[str, Any], list[str]]
) -> dict[str, list[str]]:
    """Each statement sent that reads rows, with what `faults_of` finds in its plan (those
    where it finds nothing left out). PostgreSQL is analyzed first, as autovacuum would have:
    without statistics every table looks one row long."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    found = {}
    for statement, params in sent:
        if planned(statement):
            found_here = faults_of(statement, params)
            if found_here:
                found[" ".join(statement.split())[:300]] = found_here
    return found
