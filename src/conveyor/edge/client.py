"""Talking to the edge: requests over its control socket, and starting it when none runs.

The server holds one `EdgeClient` per data directory; each proxied target gets a `RemoteRoute`
for its environment. Nothing here keeps a port: a server that dies leaves the routes with the
edge, and a new server asks for the same routes again and finds them as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.edge.paths import EdgePaths, decode, encode
from conveyor.proc import supervised
from conveyor.targets.base import TargetError

__all__ = ["EdgeClient", "EdgeUnreachable", "RemoteRoute", "edge_pid", "stop_edge"]

# Every request is answered at once except `switch`, which drains first (its own bound + this).
_REPLY_TIMEOUT = 10.0
_START_TIMEOUT = 15.0
_POLL = 0.02
# What the edge process inherits: enough to run Python and find the data directory. Not the
# server's tokens, database URL or secrets key: the edge needs none of them.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
# Edges this process started, so an edge that exits at once (another won the lock) is reaped.
_SPAWNED: list[subprocess.Popen[bytes]] = []


class EdgeUnreachable(TargetError):
    """No edge answered (none runs, or it did not reply in time), as opposed to a refusal."""


class EdgeClient:
    """The edge of data directory ``home``; started detached on first use if none runs."""

    def __init__(self, home: Path, *, spawn: bool = True) -> None:
        self.paths = EdgePaths(home)
        self.spawn = spawn
        self._started = asyncio.Lock()

    def route(self, name: str, port: int) -> RemoteRoute:
        return RemoteRoute(self, name, port)

    async def request(
        self, message: dict[str, Any], timeout: float = _REPLY_TIMEOUT
    ) -> dict[str, Any]:
        """One request, one reply. TargetError when the edge refuses or cannot be reached."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.paths.socket))
                try:
                    writer.write(encode(message))
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise EdgeUnreachable(
                f"the edge of {self.paths.home} does not answer: {_reason(exc)}",
                hint="`conveyor edge status` shows it; `conveyor edge run` starts it",
            ) from exc
        try:
            reply = decode(line)
        except ValueError as exc:
            raise TargetError(f"the edge answered something unreadable: {line[:200]!r}") from exc
        if not reply.get("ok"):
            raise TargetError(f"the edge: {reply.get('error')}", hint=reply.get("hint"))
        return reply

    async def ensure_running(self) -> None:
        """Ping the edge; start one (detached, in its own session) if none answers."""
        async with self._started:
            try:
                await self.request({"op": "ping"}, timeout=2.0)
                return
            except EdgeUnreachable:
                if not self.spawn:
                    raise
            start_detached(self.paths.home)
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                try:
                    await self.request({"op": "ping"}, timeout=2.0)
                    return
                except EdgeUnreachable:
                    if time.monotonic() >= deadline:
                        raise TargetError(
                            f"the edge did not start within {_START_TIMEOUT:g} s",
                            hint=f"its log: {self.paths.log}",
                        ) from None
                await asyncio.sleep(_POLL)


class RemoteRoute:
    """One environment's stable port, held by the edge."""

    def __init__(self, client: EdgeClient, name: str, port: int) -> None:
        self._client = client
        self._name = name
        self._wanted = port
        self._port = port
        self._upstream: int | None = None
        self._listening = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def upstream(self) -> int | None:
        return self._upstream

    async def start(self) -> None:
        await self._client.ensure_running()
        reply = await self._client.request(
            {"op": "listen", "name": self._name, "port": self._wanted}
        )
        self._port, self._upstream = int(reply["port"]), reply.get("upstream")
        self._listening = True

    async def switch(self, upstream: int, drain_timeout: float) -> int:
        message = {"op": "switch", "name": self._name, "upstream": upstream, "drain": drain_timeout}
        timeout = _REPLY_TIMEOUT + max(drain_timeout, 0.0)
        try:
            reply = await self._client.request(message, timeout)
        except EdgeUnreachable:
            # The edge died since this route was made: a new one restores the routes from its
            # file; ask for this one again (it may have been added after the file was read).
            await self.start()
            reply = await self._client.request(message, timeout)
        self._upstream = upstream
        return int(reply.get("still_open", 0))

    async def close(self) -> None:
        """Nothing to release: the edge keeps serving the route when this server goes."""


def start_detached(home: Path) -> None:
    """Start `conveyor edge run` for ``home`` in a session of its own, output to its log: not a
    child that shares the server's fate (a signal to the server's group does not reach it)."""
    paths = EdgePaths(home)
    paths.make()
    for child in list(_SPAWNED):
        if child.poll() is not None:
            _SPAWNED.remove(child)
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    env["CONVEYOR_HOME"] = str(home)
    with paths.log.open("ab") as out:
        _SPAWNED.append(
            subprocess.Popen(
                [sys.executable, "-m", "conveyor", "edge", "run"],
                env=env,
                cwd="/",
                **supervised(out),
            )
        )


def edge_pid(home: Path) -> int | None:
    """The pid of the edge serving ``home``, if one runs (its pid file and its lock agree)."""
    paths = EdgePaths(home)
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _holds_lock(paths) and _alive(pid) else None


def stop_edge(home: Path, timeout: float = 10.0) -> int | None:
    """SIGTERM the edge of ``home`` by its pid and wait (bounded) until it is gone; SIGKILL
    after ``timeout``. Returns the pid that was stopped, None if no edge ran."""
    pid = edge_pid(home)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(_POLL)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for child in list(_SPAWNED):
        if child.pid == pid:
            child.wait(timeout=5)
            _SPAWNED.remove(child)
    return pid


def _holds_lock(paths: EdgePaths) -> bool:
    import fcntl

    try:
        with paths.lock.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def _alive(pid: int) -> bool:
    for child in _SPAWNED:
        if child.pid == pid:
            child.poll()  # a child of ours that exited is reaped, not left as a zombie
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no reply in time"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
