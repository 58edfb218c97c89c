"""`conveyor edge run`: the long-lived process that holds the stable ports.

One route per environment ("service/environment"): a stable port and the release port it
forwards to. Routes come from ``routes.json`` on start (so an edge restarted after a crash or a
reboot serves what it served before, before any server is up) and change only through the
control socket. Each route is a `Proxy` (conveyor.targets.proxy): TCP, the upstream picked once
per accepted connection, so a switch is atomic and in-flight connections finish where they
started.

A route's record is written before the change is applied and before the reply: whoever was told
"switched" finds the same route after any crash of the edge. Single instance per data directory:
an exclusive lock on ``edge.lock`` held for the process's life; a second edge exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from conveyor.edge.paths import PROTOCOL, EdgePaths, decode, encode
from conveyor.errors import ConveyorError
from conveyor.targets.proxy import Proxy

__all__ = ["EdgeDaemon"]

log = logging.getLogger("conveyor.edge")

# A request is one short JSON line; a client that sends nothing is dropped after this.
_REQUEST_TIMEOUT = 10.0
_REQUEST_MAX = 64 * 1024
# Draining waits at most this long, whatever the client asks: a switch must end.
_DRAIN_MAX = 300.0


class _Route:
    __slots__ = ("error", "name", "proxy")

    def __init__(self, name: str, proxy: Proxy) -> None:
        self.name = name
        self.proxy = proxy
        self.error: str | None = None


class EdgeDaemon:
    def __init__(self, home: Path) -> None:
        self.paths = EdgePaths(home)
        self._routes: dict[str, _Route] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._started = time.time()

    # --- life ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM, SIGINT or a `stop` request. Returns the exit status: 0, also
        when another edge already serves this data directory (nothing to do)."""
        self.paths.make()
        lock = self.paths.lock.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            log.info("an edge already serves %s", self.paths.home)
            return 0
        try:
            return await self._serve()
        finally:
            lock.close()

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # The edge belongs to no terminal: a hang-up is not a reason to drop production.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        await self._restore()
        sock = self.paths.socket
        # We hold the lock, so a socket file left there is a dead edge's.
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        old_umask = os.umask(0o177)
        try:
            control = await asyncio.start_unix_server(self._control, path=str(sock))
        finally:
            os.umask(old_umask)
        self._write_pid()
        log.info(
            "edge %d serving %d route(s); control socket %s", os.getpid(), len(self._routes), sock
        )
        try:
            await self._stop.wait()
        finally:
            control.close()
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            for route in self._routes.values():
                await route.proxy.close()
            with contextlib.suppress(FileNotFoundError):
                self.paths.pid.unlink()
            log.info("edge %d stopped", os.getpid())
        return 0

    def _write_pid(self) -> None:
        tmp = self.paths.pid.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.paths.pid)

    # --- routes --------------------------------------------------------------------------------

    async def _restore(self) -> None:
        for name, record in _read_routes(self.paths.routes).items():
            route = _Route(name, Proxy(int(record.get("port", 0))))
            self._routes[name] = route
            try:
                await route.proxy.start()
            except ConveyorError as exc:
                # Kept, and shown by `status`: the next `listen` for it tries again.
                route.error = exc.message
                log.error("route %s: %s", name, exc.message)
                continue
            upstream = record.get("upstream")
            if isinstance(upstream, int):
                await route.proxy.switch(upstream, 0)

    def _save(self, override: dict[str, dict[str, Any]] | None = None) -> None:
        records = {
            name: {"port": r.proxy.port, "upstream": r.proxy.upstream}
            for name, r in self._routes.items()
        }
        records.update(override or {})
        tmp = self.paths.routes.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump({"version": PROTOCOL, "routes": records}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.paths.routes)

    async def _listen(self, name: str, port: int) -> dict[str, Any]:
        async with self._lock:
            route = self._routes.get(name)
            if route is not None and route.proxy.running and port in (0, route.proxy.port):
                return self._describe(route)
            for other in self._routes.values():
                if other.name != name and port and other.proxy.port == port:
                    raise _Refused(f"port {port} is the stable port of {other.name}")
            upstream = route.proxy.upstream if route is not None else None
            wanted = port or (route.proxy.port if route is not None else 0)
            proxy = Proxy(wanted)
            await proxy.start()  # TargetError (port in use) goes back to the client as is
            if route is not None and route.proxy.running:
                # The environment's port was changed in conveyor.yml: the old one closes once
                # the new one listens, so a port that cannot be had leaves the old one serving.
                await route.proxy.close()
            if upstream is not None:
                await proxy.switch(upstream, 0)
            route = _Route(name, proxy)
            self._routes[name] = route
            self._save()
            log.info("route %s listens on :%d", name, proxy.port)
            return self._describe(route)

    async def _switch(self, name: str, upstream: int, drain: float) -> dict[str, Any]:
        async with self._lock:
            route = self._routes.get(name)
            if route is None or not route.proxy.running:
                raise _Refused(f"no route {name} is listening (ask `listen` first)")
            previous = route.proxy.upstream
            self._save({name: {"port": route.proxy.port, "upstream": upstream}})
            await route.proxy.switch(upstream, 0)
            log.info("route %s :%d now forwards to :%d", name, route.proxy.port, upstream)
        still_open = 0
        if previous is not None and previous != upstream:
            await route.proxy.wait_drained(previous, min(max(drain, 0.0), _DRAIN_MAX))
            still_open = route.proxy.active_connections(previous)
        return {**self._describe(route), "previous": previous, "still_open": still_open}

    async def _forget(self, name: str) -> dict[str, Any]:
        async with self._lock:
            route = self._routes.pop(name, None)
            self._save()
            if route is not None:
                await route.proxy.close()
            return {"forgotten": route is not None}

    def _describe(self, route: _Route) -> dict[str, Any]:
        proxy = route.proxy
        upstream = proxy.upstream
        return {
            "name": route.name,
            "port": proxy.port,
            "upstream": upstream,
            "listening": proxy.running,
            "connections": proxy.active_connections(upstream) if upstream is not None else 0,
            "error": route.error,
        }

    def _status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "protocol": PROTOCOL,
            "uptime": round(time.time() - self._started, 1),
            "routes": [self._describe(r) for _, r in sorted(self._routes.items())],
        }

    # --- the control socket --------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                line = await reader.readline()
            if len(line) > _REQUEST_MAX:
                raise _Refused("request too long")
            reply = {"ok": True, **(await self._answer(decode(line)))}
        except _Refused as exc:
            reply = {"ok": False, "error": str(exc)}
        except ConveyorError as exc:
            reply = {"ok": False, "error": exc.message, "hint": exc.hint}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except (TimeoutError, OSError):
            writer.close()
            return
        with contextlib.suppress(OSError):
            writer.write(encode(reply))
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid(), "protocol": PROTOCOL}
        if op == "status":
            return self._status()
        if op == "listen":
            return await self._listen(_name(request), _port(request.get("port", 0), zero=True))
        if op == "switch":
            drain = float(request.get("drain", 0))
            return await self._switch(_name(request), _port(request["upstream"]), drain)
        if op == "forget":
            return await self._forget(_name(request))
        if op == "stop":
            # Answered first, then stopped: the caller learns it was heard.
            asyncio.get_running_loop().call_soon(self._stop.set)
            return {"pid": os.getpid()}
        raise _Refused(f"unknown request {op!r}")


class _Refused(Exception):
    """A request the edge will not carry out; the message goes back to the client."""


def _name(request: dict[str, Any]) -> str:
    name = request["name"]
    if not isinstance(name, str) or not name or len(name) > 300:
        raise _Refused("a route needs a name")
    return name


def _port(value: Any, *, zero: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (0 if zero else 1) <= value <= 65535
    ):
        raise _Refused(f"not a port: {value!r}")
    return value


def _read_routes(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("cannot read %s (%s): starting with no routes", path, exc)
        return {}
    routes = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(routes, dict):
        return {}
    return {str(k): v for k, v in routes.items() if isinstance(v, dict)}
