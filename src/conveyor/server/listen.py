"""The HTTP listener's own defences, below the ASGI app: what uvicorn does not bound.

uvicorn (0.54, httptools) puts no deadline on a request's headers (its keep-alive timeout only
starts after a response), no size limit on them (llhttp has none) and no cap on connections
(``limit_concurrency`` answers 503 only once a request's headers are complete, so a client
that never completes them holds its socket forever). Twenty thousand such clients used up the
server's file descriptors, and asyncio then logged a traceback per failed accept.

`guarded_protocol` is uvicorn's httptools protocol with those three bounds; `RateLimit` is a
logging filter that lets a repeated message through a few times per interval and then counts
it; `raise_fd_limit` gives the process the file descriptors its connection cap needs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.settings import Settings

log = logging.getLogger("conveyor.server")

HEADER_TIMEOUT_SECONDS = 10.0
MAX_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS: int = Settings.default("max_connections")
# File descriptors kept for everything but client connections: the database, log files,
# workspaces, pipes to step processes, connections to registries and Prometheus.
RESERVED_FDS = 256

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    b"too many connections, try again"
)
_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nthe request headers were late"
)
_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8"
    b"\r\ncontent-length: 31\r\nconnection: close\r\n\r\nthe request headers are too big"
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit on each request's
    headers and a cap on open connections (class attributes: see `guarded_protocol`)."""

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    max_header_bytes: int = MAX_HEADER_BYTES
    max_connections: int = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        # Between requests and inside one until its headers are complete.
        self._awaiting_headers = True
        self._header_bytes = 0
        self._heads = 0  # requests whose headers were complete, on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning(
                "refusing connections: %d are open, the limit (--max-connections)",
                self.max_connections,
            )
            transport.write(_BUSY)
            transport.close()
            return
        # Even a client that sends nothing at all must not keep its socket.
        self._arm()

    def data_received(self, data: bytes) -> None:
        awaiting, heads = self._awaiting_headers, self._heads
        if awaiting and self._header_deadline is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        # Counted only when all of this data went to unfinished headers: a chunk in which
        # some headers ended (and a body, even a next request, began) is not.
        if awaiting and self._heads == heads and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(_LARGE)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._heads += 1
        self._header_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _late(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers and not self.transport.is_closing():
            # A connection that never sent a byte gets no answer: there was no request.
            began = self._header_bytes > 0 or bool(getattr(self, "url", None))
            self._refuse(_SLOW if began else b"")

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        if answer:
            self.transport.write(answer)
        self.transport.close()


def guarded_protocol(
    *, header_timeout: float, max_header_bytes: int, max_connections: int
) -> type[GuardedProtocol]:
    """A GuardedProtocol class with these bounds (uvicorn takes a class, and builds one
    instance per connection)."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": header_timeout,
            "max_header_bytes": max_header_bytes,
            "max_connections": max_connections,
        },
    )


# Errors of the machine, not of Conveyor: the message says it all, a traceback adds nothing.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class RateLimit(logging.Filter):
    """Lets each kind of message (logger, format string, exception type) through `burst`
    times per `interval` seconds, then drops it and counts; the next one let through says how
    many were dropped. Only warnings and worse: they are what floods under attack (a refused
    accept per connection, a refusal per request). Out-of-resource errors lose their
    traceback, which would be the same each time."""

    def __init__(self, interval: float = 60.0, burst: int = 5) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        # key → (window start, let through in the window, dropped since the last one shown)
        self._seen: dict[tuple[str, str, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, str(record.msg), type(exc).__name__ if exc else "")
        now = time.monotonic()
        start, shown, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self.interval:
            start, shown = now, 0
        if shown >= self.burst:
            self._seen[key] = (start, shown, dropped + 1)
            return False
        self._seen[key] = (start, shown + 1, 0)
        if len(self._seen) > 10_000:  # many distinct messages: forget the oldest windows
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                del self._seen[old]
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            record.msg = f"{record.getMessage()}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if dropped:
            record.msg = f"{record.getMessage()} [and {dropped} more like it, not shown]"
            record.args = None
        return True


def rate_limit_logs(loggers: Iterable[str], *, interval: float = 60.0, burst: int = 5) -> None:
    """Put one RateLimit on every handler of these loggers (a filter on a logger would miss
    what its children propagate to it)."""
    limiter = RateLimit(interval, burst)
    for name in loggers:
        for handler in logging.getLogger(name or None).handlers:
            if not any(isinstance(f, RateLimit) for f in handler.filters):
                handler.addFilter(limiter)


def raise_fd_limit(max_connections: int) -> int:
    """Raise this process's open-file limit as far as allowed (many systems start at 1024,
    too few for the connection cap) and return the connection cap it leaves room for."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = max_connections + RESERVED_FDS
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError):
        return max_connections
    if soft != resource.RLIM_INFINITY and soft - RESERVED_FDS < max_connections:
        allowed = max(soft - RESERVED_FDS, 16)
        log.warning(
            "open-file limit %d leaves room for %d connections, not %d: raise it (ulimit -n)",
            soft,
            allowed,
            max_connections,
        )
        return allowed
    return max_connections
