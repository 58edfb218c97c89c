"""The edge process (`conveyor edge`, decision 0014) on its own: it holds stable ports for a
data directory, keeps them through the death of whoever asked for them, restores them after its
own crash from routes.json, runs once per data directory, and only its owner may steer it.

Every edge a test starts is stopped by its PID in teardown; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.edge.client import EdgeClient, edge_pid, stop_edge
from conveyor.edge.paths import EdgePaths
from conveyor.targets.base import TargetError
from tests.serverproc import clean_env, conveyor_argv, free_port, until

pytestmark = pytest.mark.integration


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    try:
        yield home
    finally:
        stop_edge(home)


def fetch(port: int) -> bytes | None:
    """One request as a user makes it: what came back, or None if the port did not answer."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"hi\n")
            return s.recv(100) or None
    except OSError:
        return None


class Upstream:
    """A release stand-in in another process: answers its name on every connection."""

    def __init__(self, name: str) -> None:
        code = (
            "import socket,sys\n"
            "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(64)\n"
            "print(s.getsockname()[1], flush=True)\n"
            "while True:\n"
            "    c,_=s.accept(); c.recv(100); c.sendall(sys.argv[1].encode()); c.close()\n"
        )
        self.proc = subprocess.Popen(
            ["python3", "-c", code, name], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    made: list[Upstream] = []

    def make(name: str) -> Upstream:
        made.append(Upstream(name))
        return made[-1]

    yield make
    for upstream in made:
        upstream.stop()


def test_a_route_outlives_its_client_and_a_new_client_finds_it_as_it_was(
    home: Path, upstreams: Callable[[str], Upstream]
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")

    async def first_server() -> int:
        route = EdgeClient(home).route("shop/production", 0)
        await route.start()
        assert await route.switch(v1.port, 1.0) == 0
        await route.close()  # what a stopping server does: the edge keeps the route
        return route.port

    port = asyncio.run(first_server())
    assert fetch(port) == b"v1"

    async def second_server() -> None:
        route = EdgeClient(home).route("shop/production", port)
        await route.start()
        assert route.upstream == v1.port  # re-adopted, not reset
        await route.switch(v2.port, 1.0)

    run(second_server)
    assert fetch(port) == b"v2"


def test_an_edge_killed_with_9_comes_back_serving_its_routes_from_its_file(
    home: Path, upstreams: Callable[[str], Upstream]
) -> None:
    v1 = upstreams("v1")

    async def setup() -> int:
        route = EdgeClient(home).route("shop/production", 0)
        await route.start()
        await route.switch(v1.port, 0)
        return route.port

    port = asyncio.run(setup())
    first = edge_pid(home)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until(lambda: fetch(port) is None, 10, "the killed edge's port to close")
    until(lambda: edge_pid(home) is None, 10, "the killed edge to be gone")

    asyncio.run(EdgeClient(home).ensure_running())  # as the next server start does
    assert fetch(port) == b"v1"  # before anyone asked for the route again
    assert edge_pid(home) not in (None, first)


def test_one_edge_per_data_directory_and_its_socket_is_its_owners_only(home: Path) -> None:
    asyncio.run(EdgeClient(home).ensure_running())
    pid = edge_pid(home)
    paths = EdgePaths(home)
    assert stat.S_IMODE(paths.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700

    second = subprocess.run(
        conveyor_argv("edge", "run"),
        env=clean_env(CONVEYOR_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "already serves" in second.stderr
    assert edge_pid(home) == pid


def test_edge_status_shows_the_routes_and_stop_ends_the_edge(
    home: Path, upstreams: Callable[[str], Upstream]
) -> None:
    v1 = upstreams("v1")

    async def setup() -> int:
        route = EdgeClient(home).route("shop/production", 0)
        await route.start()
        await route.switch(v1.port, 0)
        return route.port

    port = asyncio.run(setup())
    env = clean_env(CONVEYOR_HOME=str(home))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            conveyor_argv("edge", *args),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    shown = cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "shop/production" in shown.stdout
    assert f":{port}" in shown.stdout
    assert f":{v1.port}" in shown.stdout

    assert "stopped the edge" in cli("stop").stdout
    assert fetch(port) is None
    gone = cli("status")
    assert gone.returncode != 0
    assert "no edge answers" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_stable_port_taken_by_another_route_or_program_is_refused_clearly(
    home: Path,
) -> None:
    async def scenario() -> None:
        client = EdgeClient(home)
        first = client.route("shop/production", 0)
        await first.start()
        with pytest.raises(TargetError, match=r"is the stable port of shop/production"):
            await client.route("shop/staging", first.port).start()
        blocker = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        taken = blocker.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TargetError, match=r"already in use"):
                await client.route("other/production", taken).start()
        finally:
            blocker.close()

    run(scenario)


def test_a_switch_after_the_edge_died_starts_a_new_edge_and_lands(
    home: Path, upstreams: Callable[[str], Upstream]
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")

    async def scenario() -> None:
        route = EdgeClient(home).route("shop/production", 0)
        await route.start()
        await route.switch(v1.port, 0)
        first = edge_pid(home)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.to_thread(until, lambda: edge_pid(home) is None, 10, "the edge to die")
        await route.switch(v2.port, 0)  # the same client, as a running server would
        assert await asyncio.to_thread(fetch, route.port) == b"v2"
        assert edge_pid(home) not in (None, first)

    run(scenario)


def test_a_changed_stable_port_moves_the_route_and_keeps_its_upstream(
    home: Path, upstreams: Callable[[str], Upstream]
) -> None:
    v1 = upstreams("v1")
    moved_to = free_port()

    async def scenario() -> None:
        client = EdgeClient(home)
        before = client.route("shop/production", 0)
        await before.start()
        await before.switch(v1.port, 0)
        after = client.route("shop/production", moved_to)  # `port:` set in conveyor.yml
        await after.start()
        assert after.upstream == v1.port
        assert await asyncio.to_thread(fetch, moved_to) == b"v1"
        assert await asyncio.to_thread(fetch, before.port) is None

    run(scenario)
