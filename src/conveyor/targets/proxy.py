"""The built-in reverse proxy: one stable port in front of whichever release is serving.

Releases listen on a fresh port each, so that a new one can start beside the old one; users and
checks reach the environment on one port that never changes. The proxy works on TCP, not HTTP:
it picks the upstream once, when a connection is accepted, and then only copies bytes. That keeps
it protocol-agnostic (HTTP/1, HTTP/2, WebSocket, gRPC, plain TCP) and cheap, and makes a switch
exact: every connection accepted after `switch` returns goes to the new upstream, and every
connection accepted before keeps its upstream until it ends, which is what draining waits for.

A consequence of working on TCP: a client that keeps an idle keep-alive connection open keeps
talking to the old upstream until that connection closes (the old release closes it when it is
stopped, at the latest after the drain timeout).
"""

from __future__ import annotations

import asyncio
import contextlib

from conveyor.errors import listen_failure
from conveyor.targets.base import TargetError

__all__ = ["LocalRoute", "Proxy"]

_CHUNK = 64 * 1024
# Connecting to a local port is answered at once (accepted or refused); only a release whose
# accept queue is full leaves a connect hanging, and a client should not hang with it forever.
_CONNECT_TIMEOUT = 10.0
# How long `close` waits for the connection handlers it aborted to finish.
_CLOSE_GRACE = 2.0
_LOCAL = "127.0.0.1"


class _Connection:
    """One client connection and, once connected, its upstream connection."""

    __slots__ = ("client", "task", "upstream", "upstream_writer")

    def __init__(self, client: asyncio.StreamWriter, upstream: int) -> None:
        self.client = client
        self.upstream = upstream
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.task = asyncio.current_task()

    def abort(self) -> None:
        """Drop both sides at once: used when one direction failed, so the other one cannot
        wait forever on a peer that will never speak again."""
        for writer in (self.client, self.upstream_writer):
            if writer is not None:
                writer.transport.abort()


class Proxy:
    """Listens on ``host:port`` and forwards each new connection to ``127.0.0.1:<upstream>``.

    With no upstream set, connections are accepted and closed at once, so clients fail fast
    instead of waiting on a listen queue nobody reads.
    """

    def __init__(self, port: int, host: str = _LOCAL) -> None:
        self._host = host
        self._port = port
        self._upstream: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[int, set[_Connection]] = {}
        self._drained: dict[int, asyncio.Event] = {}

    @property
    def port(self) -> int:
        """The port clients connect to; once started, the one actually bound (``0`` asked the
        system for a free port, which is how a stable port is picked without a race)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def upstream(self) -> int | None:
        return self._upstream

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Start listening; a no-op if already listening."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, limit=_CHUNK
            )
        except OSError as exc:
            remedy = "set another `port` in the deploy section"
            message, hint = listen_failure(exc, self._host, self._port, remedy)
            raise TargetError(message, hint=hint) from exc

    async def switch(self, upstream_port: int, drain_timeout: float = 10.0) -> None:
        """Send new connections to ``upstream_port``, then wait (at most ``drain_timeout``
        seconds) until the connections still open to the previous upstream have ended.

        The upstream changes before the first await, so the change is atomic for the event
        loop: no connection is accepted "half way". Connections still open after the timeout
        are left alone; stopping the old release ends them.
        """
        previous = self._upstream
        self._upstream = upstream_port
        if previous is None or previous == upstream_port:
            return
        await self.wait_drained(previous, drain_timeout)

    async def wait_drained(self, upstream_port: int, timeout: float) -> bool:
        """Wait (bounded) until no connection to ``upstream_port`` is open; True if none is."""
        if not self._connections.get(upstream_port) or timeout <= 0:
            return not self._connections.get(upstream_port)
        event = self._drained.setdefault(upstream_port, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return not self._connections.get(upstream_port)

    def active_connections(self, upstream_port: int) -> int:
        """Connections currently open (or being opened) to ``upstream_port``."""
        return len(self._connections.get(upstream_port, ()))

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = [c for conns in self._connections.values() for c in conns]
        for connection in connections:
            connection.abort()
        tasks = {c.task for c in connections if c.task is not None and not c.task.done()}
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _CLOSE_GRACE)

    # --- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = self._upstream
        if upstream is None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        connection = _Connection(writer, upstream)
        self._connections.setdefault(upstream, set()).add(connection)
        try:
            await self._serve(connection, reader)
        finally:
            connection.abort()
            self._forget(connection)

    async def _serve(self, connection: _Connection, client_reader: asyncio.StreamReader) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(_LOCAL, connection.upstream, limit=_CHUNK),
                _CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError):
            return  # the client sees its connection closed: the upstream is not there
        connection.upstream_writer = up_writer
        await asyncio.gather(
            _copy(client_reader, up_writer, connection),
            _copy(up_reader, connection.client, connection),
        )
        for side in (up_writer, connection.client):
            side.close()
        for side in (up_writer, connection.client):
            with contextlib.suppress(OSError):
                await side.wait_closed()

    def _forget(self, connection: _Connection) -> None:
        conns = self._connections.get(connection.upstream)
        if conns is None:
            return
        conns.discard(connection)
        if not conns:
            del self._connections[connection.upstream]
            event = self._drained.pop(connection.upstream, None)
            if event is not None:
                event.set()


async def _copy(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, connection: _Connection
) -> None:
    """Copy one direction until end of stream, then pass the half-close on, so protocols that
    signal "done sending" by shutting down their write side keep working through the proxy."""
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.transport.is_closing():
            dst.write_eof()
    except OSError:
        connection.abort()


class LocalRoute:
    """A route served by a proxy inside this process: it lives and dies with the process (the
    embedded mode, for tests and `conveyor server --edge embedded`)."""

    def __init__(self, port: int) -> None:
        self._proxy = Proxy(port)

    @property
    def port(self) -> int:
        return self._proxy.port

    @property
    def upstream(self) -> int | None:
        return self._proxy.upstream

    async def start(self) -> None:
        await self._proxy.start()

    async def switch(self, upstream: int, drain_timeout: float) -> int:
        previous = self._proxy.upstream
        await self._proxy.switch(upstream, drain_timeout)
        if previous is None or previous == upstream:
            return 0
        return self._proxy.active_connections(previous)

    async def close(self) -> None:
        await self._proxy.close()
