"""A real `conveyor server` for the CLI's tests that need one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Conveyor
from tests.serverproc import ServerProcess


@pytest.fixture
def server(tmp_path: Path, conveyor: Conveyor) -> Iterator[ServerProcess]:
    """A server with an admin token; the `conveyor` fixture is pointed at it."""
    running = ServerProcess(tmp_path / "server-home")
    running.admin = running.token("ann", "admin")
    running.start()
    conveyor.extra_env.update(CONVEYOR_URL=running.url, CONVEYOR_TOKEN=running.admin)
    try:
        yield running
    finally:
        running.stop()
