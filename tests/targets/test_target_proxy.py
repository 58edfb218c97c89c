"""The built-in proxy against real sockets: forwarding, half-close, switching, draining, errors.

Upstreams are small asyncio servers in the test's own event loop; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from conveyor.targets.base import TargetError
from conveyor.targets.proxy import Proxy

WAIT = 10.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 60))


@contextlib.asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[int]:
    """An upstream server on a free port, closed (with its connections) at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def proxy_on(port: int = 0) -> AsyncIterator[Proxy]:
    proxy = Proxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def named(name: bytes) -> Handler:
    """An upstream that answers its name and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name)
        await writer.drain()

    return handle


async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that says hello, then echoes until the client closes: a long connection."""
    writer.write(b"hello")
    await writer.drain()
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def fetch(port: int, send: bytes = b"") -> bytes:
    """Connect through the proxy, send, half-close, and read until the other side closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if send:
            writer.write(send)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_bytes_flow_both_ways_and_a_half_close_reaches_the_upstream() -> None:
    """A client that sends a large body, then shuts down its write side, still gets the whole
    answer: the upstream only answers once it has seen the end of the request."""

    async def digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await reader.read()  # until the client's half-close arrives
        writer.write(str(len(body)).encode() + b":" + body[::-1])
        await writer.drain()

    async def scenario() -> None:
        payload = bytes(range(256)) * 8192  # 2 MiB: many chunks each way
        async with upstream(digest) as port, proxy_on() as proxy:
            await proxy.switch(port)
            answer = await fetch(proxy.port, payload)
            assert answer == f"{len(payload)}:".encode() + payload[::-1]
            await eventually(lambda: proxy.active_connections(port) == 0, "the connection to end")

    run(scenario())


def test_without_an_upstream_connections_are_closed_at_once() -> None:
    async def scenario() -> None:
        async with proxy_on() as proxy:
            assert proxy.upstream is None
            assert await fetch(proxy.port) == b""
            # Closing with the request unread resets the connection: the client fails at once.
            with contextlib.suppress(ConnectionResetError):
                assert await fetch(proxy.port, b"GET / HTTP/1.0\r\n\r\n") == b""

    run(scenario())


def test_an_upstream_that_is_not_listening_closes_the_client_connection() -> None:
    async def scenario() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # bound, not listening: connections are refused
            async with proxy_on() as proxy:
                await proxy.switch(dead)
                assert await fetch(proxy.port, b"ping") == b""
                assert proxy.active_connections(dead) == 0

    run(scenario())


def test_switch_sends_new_connections_to_the_new_upstream_and_drains_the_old() -> None:
    async def scenario() -> None:
        async with (
            upstream(held) as old,
            upstream(named(b"new")) as new,
            proxy_on() as proxy,
        ):
            await proxy.switch(old)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
            assert proxy.active_connections(old) == 1

            switching = asyncio.create_task(proxy.switch(new, drain_timeout=WAIT))
            await asyncio.sleep(0)  # let the switch start: the change must be immediate
            assert proxy.upstream == new
            assert await fetch(proxy.port) == b"new"
            assert not switching.done(), "switch returned while a connection to old was open"

            # The connection opened before the switch still reaches the old upstream.
            writer.write(b"still here")
            assert await asyncio.wait_for(reader.readexactly(10), WAIT) == b"still here"

            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(switching, WAIT)
            assert proxy.active_connections(old) == 0

    run(scenario())


def test_draining_gives_up_after_the_drain_timeout() -> None:
    async def scenario() -> None:
        async with (
            upstream(held) as old,
            upstream(named(b"new")) as new,
            proxy_on() as proxy,
        ):
            await proxy.switch(old)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
            started = time.monotonic()
            await asyncio.wait_for(proxy.switch(new, drain_timeout=0.3), WAIT)
            assert 0.25 <= time.monotonic() - started < 5
            assert proxy.active_connections(old) == 1  # left alone, not cut
            writer.close()
            await writer.wait_closed()

    run(scenario())


def test_a_port_in_use_is_a_clear_error() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proxy = Proxy(port)
            with pytest.raises(TargetError, match=f"port {port} on 127.0.0.1 is already in use"):
                await proxy.start()
            await proxy.close()

    run(scenario())


def test_port_zero_picks_a_free_port_and_close_stops_everything() -> None:
    async def scenario() -> None:
        async with upstream(held) as port:
            proxy = Proxy(0)
            await proxy.start()
            assert proxy.port != 0
            await proxy.switch(port)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"

            await proxy.close()
            # The open connection is dropped and nothing listens any more.
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", proxy.port)

    run(scenario())
