"""The `process` target with real releases: a small HTTP service written into tmp_path answers
its version, and is reached through the stable endpoint (the built-in proxy) or directly.

Every release a test starts is killed by its PID in teardown; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.proc import kill_process_group, process_alive, process_start_time
from conveyor.targets import process as process_module
from conveyor.targets.base import Instance, ReleaseBundle, TargetContext, TargetError
from conveyor.targets.process import ProcessTarget
from tests.serverproc import free_port

pytestmark = pytest.mark.integration

WAIT = 10.0
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
# The machine's python3: the sandbox sees /usr, not the virtualenv running the tests.
START = "exec python3 app.py"
# HTTP/1.0 service: one request per connection, as a TCP proxy's switch is per connection.
CLOSE = {"Connection": "close"}

SERVICE = """
    import os, pathlib, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    VERSION = pathlib.Path("VERSION").read_text().strip()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":
                # A request that stays in flight until the test lets it finish.
                pathlib.Path("slow-started").touch()
                deadline = time.monotonic() + 30
                while not pathlib.Path("slow-release").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            body = VERSION.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    print("serving", VERSION, "on", os.environ["PORT"], flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

CRASHES = """
    import sys
    for n in range(1, 7):
        print(f"config line {n}", file=sys.stderr)
    print("fatal: DATABASE_URL is not set", file=sys.stderr)
    sys.exit(3)
"""

NEVER_LISTENS = """
    import time
    print("warming up", flush=True)
    time.sleep(60)
"""


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 60))


def release(tmp_path: Path, release_id: int, script: str = SERVICE) -> ReleaseBundle:
    sha = f"{release_id:x}" * 40
    bundle = ReleaseBundle(
        release_id=release_id, service="web", sha=sha[:40], root=tmp_path / f"r{release_id}"
    )
    bundle.root.mkdir()
    (bundle.root / "app.py").write_text(textwrap.dedent(script))
    (bundle.root / "VERSION").write_text(bundle.version)
    return bundle


class Env:
    """One service environment: its context, the lines the target logged, and a target."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.lines: list[str] = []
        self.ctx = TargetContext(
            service="web",
            environment="production",
            tier="production",
            options={"start": START, **options},
            env=ENV,
            state_dir=tmp_path / "state",
            log=self.lines.append,
        )

    def target(self) -> ProcessTarget:
        return ProcessTarget(self.ctx)


@pytest.fixture(autouse=True)
def releases_are_stopped() -> Iterator[None]:
    """Kill, by PID, every release started during the test, and reap it."""
    before = set(process_module._CHILDREN)
    yield
    for pid in set(process_module._CHILDREN) - before:
        child = process_module._CHILDREN.pop(pid)
        if child.poll() is None:
            kill_process_group(pid, signal.SIGKILL)
        child.wait(timeout=WAIT)


async def get(url: str, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        return await client.get(url + path, headers=CLOSE)


async def version_at(url: str) -> str:
    response = await get(url)
    assert response.status_code == 200
    return response.text


async def eventually(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def is_up(instance: Instance) -> bool:
    pid = instance.state["pid"]
    return process_alive(pid) and process_start_time(pid) == instance.state["start_time"]


def test_recreate_deploys_behind_the_stable_endpoint(tmp_path: Path) -> None:
    env = Env(tmp_path)
    a, b = release(tmp_path, 1), release(tmp_path, 2)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            endpoint = target.endpoint(first)
            assert endpoint is not None
            assert await version_at(endpoint) == a.version
            assert first.url is not None
            assert await version_at(first.url) == a.version
            status = await target.status(first)
            assert status.running
            assert status.detail == f"pid {first.state['pid']} on :{first.state['port']}"
            # The picked stable port is kept for the next server start.
            assert (env.ctx.state_dir / "port").read_text().strip() == endpoint.rsplit(":", 1)[1]
            assert "serving r1-1111111" in Path(first.state["log"]).read_text()

            second = await target.deploy(b, first)
            await target.switch(second, first)
            assert target.endpoint(second) == endpoint
            assert await version_at(endpoint) == b.version
            assert not is_up(first)
        finally:
            await target.close()

    run(scenario())


def test_blue_green_switch_under_load_never_fails_a_request(tmp_path: Path) -> None:
    env = Env(tmp_path, strategy="blue-green")
    a, b = release(tmp_path, 1), release(tmp_path, 2)

    async def hammer(url: str, seen: list[tuple[int, str]], stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=WAIT) as client:
            while not stop.is_set():
                try:
                    response = await client.get(url, headers=CLOSE)
                    seen.append((response.status_code, response.text))
                except httpx.HTTPError as exc:
                    seen.append((0, repr(exc)))

    async def scenario() -> None:
        target = env.target()
        stop = asyncio.Event()
        seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]
        try:
            first = await target.deploy(a, None)
            await target.switch(first, None)
            endpoint = target.endpoint(first)
            assert endpoint is not None
            clients = [asyncio.create_task(hammer(endpoint, s, stop)) for s in seen]
            await eventually(lambda: all(len(s) >= 5 for s in seen), "traffic to A")

            second = await target.deploy(b, first)
            assert second.url is not None
            assert await version_at(second.url) == b.version  # checks reach B directly
            assert await version_at(endpoint) == a.version  # users still get A
            await target.switch(second, first)
            await eventually(
                lambda: all(s.count((200, b.version)) >= 5 for s in seen), "traffic to B"
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), WAIT)
            assert not is_up(first)
        finally:
            stop.set()
            await target.close()

        for responses in seen:
            assert {status for status, _ in responses} == {200}, responses
            versions = [body for _, body in responses]
            flip = versions.index(b.version)
            assert flip > 0
            assert versions == [a.version] * flip + [b.version] * (len(versions) - flip)

    run(scenario())


def test_a_request_in_flight_to_the_old_release_completes_after_the_switch(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, strategy="blue-green", drain_timeout=30)
    a, b = release(tmp_path, 1), release(tmp_path, 2)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            await target.switch(first, None)
            endpoint = target.endpoint(first)
            assert endpoint is not None
            second = await target.deploy(b, first)

            slow = asyncio.create_task(get(endpoint, "/slow"))
            await eventually((a.root / "slow-started").exists, "the slow request to reach A")
            switching = asyncio.create_task(target.switch(second, first))
            assert await version_at(endpoint) == b.version  # new requests: B, at once
            assert not switching.done()  # draining: A keeps running for its request
            assert is_up(first)

            (a.root / "slow-release").touch()
            response = await asyncio.wait_for(slow, WAIT)
            assert (response.status_code, response.text) == (200, a.version)
            await asyncio.wait_for(switching, WAIT)
            assert not is_up(first)
        finally:
            await target.close()

    run(scenario())


def test_a_start_command_that_exits_reports_its_status_and_log_and_previous_keeps_serving(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, strategy="blue-green")
    a, broken = release(tmp_path, 1), release(tmp_path, 2, CRASHES)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            await target.switch(first, None)
            with pytest.raises(TargetError) as failure:
                await target.deploy(broken, first)
            message = str(failure.value)
            assert "start command exited with status 3 after" in message
            assert "fatal: DATABASE_URL is not set" in message
            assert "config line 3" in message
            assert "config line 1" not in message  # only the last lines
            endpoint = target.endpoint(first)
            assert endpoint is not None
            assert await version_at(endpoint) == a.version
        finally:
            await target.close()

    run(scenario())


def test_a_release_that_never_listens_is_stopped_after_ready_timeout(tmp_path: Path) -> None:
    env = Env(tmp_path, ready_timeout=0.5)
    slow = release(tmp_path, 1, NEVER_LISTENS)

    async def scenario() -> None:
        target = env.target()
        try:
            with pytest.raises(TargetError, match=r"did not accept connections on port \d+ within"):
                await target.deploy(slow, None)
        finally:
            await target.close()

    run(scenario())
    assert "warming up" in (env.ctx.state_dir / "logs" / f"{slow.version}.log").read_text()
    assert not [pid for pid in process_module._CHILDREN if process_alive(pid)]


def test_a_taken_stable_port_fails_naming_it_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = Env(tmp_path, port=port)
        target = env.target()
        with pytest.raises(TargetError, match=f"port {port} on 127.0.0.1 is already in use"):
            run(target.deploy(release(tmp_path, 1), None))
    assert not (env.ctx.state_dir / "logs").exists()
    assert not any(line.startswith("started") for line in env.lines)


def test_a_new_target_adopts_a_running_release_after_a_restart(tmp_path: Path) -> None:
    env = Env(tmp_path)
    a = release(tmp_path, 1)

    async def first_server() -> tuple[Instance, str]:
        target = env.target()
        try:
            instance = await target.deploy(a, None)
            endpoint = target.endpoint(instance)
            assert endpoint is not None
            return instance, endpoint
        finally:
            await target.close()  # the server stops; the release must not

    instance, endpoint = run(first_server())
    assert is_up(instance)

    async def second_server() -> None:
        target = env.target()
        try:
            with pytest.raises(httpx.ConnectError):
                await get(endpoint)  # nobody listens on the stable port yet
            assert await target.adopt(instance)
            assert target.endpoint(instance) == endpoint
            assert await version_at(endpoint) == a.version
        finally:
            await target.close()

    run(second_server())


def test_adopting_a_release_whose_process_died_returns_false(tmp_path: Path) -> None:
    env = Env(tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            instance = await target.deploy(release(tmp_path, 1), None)
        finally:
            await target.close()
        os.killpg(instance.state["pid"], signal.SIGKILL)
        successor = env.target()
        try:
            await eventually(lambda: not is_up(instance), "the release to die")
            assert await successor.adopt(instance) is False
        finally:
            await successor.close()

    run(scenario())


def test_a_reused_pid_is_neither_adopted_nor_stopped(tmp_path: Path) -> None:
    """An instance whose pid now names another process (same pid, other start time) is not
    running, is not adopted, and discarding it leaves that other process alone."""
    env = Env(tmp_path)
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        instance = Instance(
            1, state={"pid": other.pid, "start_time": "1", "port": free_port(), "version": "r1"}
        )

        async def scenario() -> None:
            target = env.target()
            try:
                assert not (await target.status(instance)).running
                assert await target.adopt(instance) is False
                await target.discard(instance)
            finally:
                await target.close()

        run(scenario())
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=WAIT)


def test_rollback_puts_the_previous_release_back_quickly_and_stops_the_failed_one(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, strategy="blue-green")
    a, b = release(tmp_path, 1), release(tmp_path, 2)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            await target.switch(first, None)
            second = await target.deploy(b, first)
            await target.switch(second, first)  # A is stopped now
            endpoint = target.endpoint(second)
            assert endpoint is not None

            started = time.monotonic()
            back = await target.rollback(second, a, first)
            assert await version_at(endpoint) == a.version
            assert time.monotonic() - started < 2.0
            assert back.state["version"] == a.version
            assert (await target.status(back)).running
            assert not (await target.status(second)).running
        finally:
            await target.close()

    run(scenario())


def test_rollback_before_the_switch_routes_back_to_the_still_running_release(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, strategy="blue-green")
    a, b = release(tmp_path, 1), release(tmp_path, 2)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            await target.switch(first, None)
            second = await target.deploy(b, first)
            back = await target.rollback(second, a, first)
            assert back.state["pid"] == first.state["pid"]
            endpoint = target.endpoint(back)
            assert endpoint is not None
            assert await version_at(endpoint) == a.version
            assert not is_up(second)
        finally:
            await target.close()

    run(scenario())


def test_status_after_kill_9_of_the_release_is_not_running(tmp_path: Path) -> None:
    env = Env(tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            instance = await target.deploy(release(tmp_path, 1), None)
            assert (await target.status(instance)).running
            os.killpg(instance.state["pid"], signal.SIGKILL)
            deadline = time.monotonic() + WAIT
            while (status := await target.status(instance)).running:
                assert time.monotonic() < deadline, "still running after kill -9"
                await asyncio.sleep(0.02)
            assert status.detail == f"pid {instance.state['pid']} is not running"
        finally:
            await target.close()

    run(scenario())
