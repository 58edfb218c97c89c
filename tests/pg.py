"""PostgreSQL for the tests: a fresh database per test on the server CONVEYOR_TEST_POSTGRES_URL
names (`.ci/run` starts one; its role needs CREATEDB).

In CI a missing URL is an error, never a skip: the PostgreSQL tests must run there.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ENV = "CONVEYOR_TEST_POSTGRES_URL"
PREFIX = "conveyor_test_"

# How long each CREATE DATABASE took, for whoever wants to know what the isolation costs.
creation_seconds: list[float] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def admin_url() -> str:
    """The server's URL, or fail (in CI) or skip (elsewhere) the calling test with the reason."""
    url = os.environ.get(ENV, "").strip()
    if url:
        return url
    if in_ci():
        pytest.fail(
            f"{ENV} is not set, and in CI the PostgreSQL tests must run: start a cluster as "
            ".ci/run does and export its URL",
            pytrace=False,
        )
    pytest.skip(
        f"PostgreSQL tests need {ENV}, e.g. "
        "postgresql+psycopg://conveyor:conveyor@127.0.0.1:5433/conveyor "
        "(a role with CREATEDB; .ci/run shows how to start such a cluster)"
    )


@contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    """Create an empty database for one test and yield its URL; drop it afterwards, even if
    connections to it are still open (``WITH (FORCE)``)."""
    name = f"{PREFIX}{secrets.token_hex(6)}"
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        creation_seconds.append(time.perf_counter() - started)
        try:
            yield make_url(admin).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
