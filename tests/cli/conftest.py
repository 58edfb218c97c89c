"""A real `conveyor server` for the CLI's tests that need one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
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


PIPELINE = """\
service: shop
jobs:
  build:
    run: echo building
environments:
  staging:
    deploy: { target: process, start: python3 -m http.server $PORT }
"""


def run_that_goes_on(conveyor: Conveyor, server: ServerProcess, repo: GitRepo) -> int:
    """Service shop registered on ``server`` (which has no runner) and a run of it that
    therefore does not end: its id."""
    repo.write("conveyor.yml", PIPELINE)
    repo.commit("pipeline")
    conveyor("service", "add", "shop", "--repo", str(repo.path), check=True)
    run_id: int = server.trigger("shop")["id"]
    return run_id
