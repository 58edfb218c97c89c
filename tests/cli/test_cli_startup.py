"""A command starts with what it needs and no more: what people notice as a CLI that answers at
once. Asserted by what the real `conveyor` process imports (`python -X importtime`), never by
timing (the time itself is measured in bench/cli_startup.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Conveyor
from tests.serverproc import ServerProcess

from conveyor.server.tokens import SCOPES

# The local store and what it is built on, and the engine: a second or so of imports between
# them, none of which a command that asks a server needs.
STORE_AND_ENGINE = ("conveyor.store", "conveyor.engine", "sqlalchemy", "alembic")
# What else a command asking a server has no use for: pydantic (the settings are a dataclass; the
# pipeline file's models are not read), an HTTP library besides the standard library's (httpx
# alone imports rich and pygments), FastAPI, and rich when the output is not a terminal.
NOT_FOR_ASKING = (*STORE_AND_ENGINE, "pydantic", "httpx", "fastapi", "rich")


def imported(conveyor: Conveyor, *args: str) -> tuple[str, set[str]]:
    """The standard output of `conveyor ARGS`, and every module the process imported."""
    proc = conveyor.completed(*args, python=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc.stdout, modules


def among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``packages`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


def test_help_imports_neither_the_store_nor_the_engine(conveyor: Conveyor) -> None:
    out, modules = imported(conveyor, "--help")
    assert "runs" in out
    assert among(modules, STORE_AND_ENGINE) == []


@pytest.mark.integration
def test_commands_against_a_server_import_neither_the_store_nor_the_engine(
    tmp_path: Path, conveyor: Conveyor
) -> None:
    server = ServerProcess(tmp_path / "server-home")
    server.admin = server.token("me", "admin")
    server.start()
    try:
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=server.admin)
        out, modules = imported(conveyor, "runs")
        assert "no runs yet" in out  # the server's answer: its store has no runs
        assert among(modules, NOT_FOR_ASKING) == []
        asking = (
            ["releases"],
            ["envs"],
            ["deployments"],
            ["approvals"],
            ["incident", "list"],
            ["audit"],
            ["dora"],
            ["team", "list"],
            ["connectors", "list"],
            ["service", "list"],
        )
        for command in asking:
            _, modules = imported(conveyor, *command)
            assert among(modules, NOT_FOR_ASKING) == [], command
    finally:
        server.stop()


def test_a_local_listing_reads_the_store_without_the_engine(conveyor: Conveyor) -> None:
    conveyor("runs", check=True)  # creates the store (its migrations import alembic)
    out, modules = imported(conveyor, "runs")
    assert "no runs yet" in out
    assert "conveyor.store.db" in modules
    assert among(modules, ("conveyor.engine", "alembic")) == []


def test_token_help_names_every_scope_the_server_knows(conveyor: Conveyor) -> None:
    """`conveyor token create --help` spells the scopes out (so that `service` commands need not
    import the tokens' code): they are the server's."""
    out = conveyor("token", "create", "--help", check=True).stdout
    listed = " ".join(out.split()).split("Comma-separated: ", 1)[1].split(".", 1)[0]
    assert listed.split(", ") == list(SCOPES)
