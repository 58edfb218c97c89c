"""What tests/security/test_http_hardening.py drives: the app in-process through its ASGI
interface (with a `receive` that counts what the app pulls of a body), and a real
`conveyor server` with extra options (stopped by PID; waits poll with a deadline)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.server.app import ServerConfig, create_app
from conveyor.server.tokens import create_token
from conveyor.store.db import Settings, Store, open_store
from tests.conftest import GitRepo
from tests.serverproc import Process, ServerProcess, conveyor_argv, until

MIB = 2**20


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # How many body chunks the app asked for (receive() calls that returned body bytes).
    pulled: int

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


@dataclass
class Live:
    app: Any
    store: Store
    admin: str
    runner: str
    secret: str = ""
    config: ServerConfig = field(default_factory=ServerConfig)

    async def send(
        self,
        method: str,
        path: str,
        *,
        chunks: list[bytes] | None = None,
        headers: dict[str, str] | None = None,
        declare: bool = True,
        token: str | None = None,
    ) -> Answer:
        """A request whose body is `chunks`, with its Content-Length (or chunked if not
        `declare`), answered by the app; counts the chunks the app pulled."""
        chunks = chunks or []
        sent = dict(headers or {})
        sent.setdefault("content-type", "application/json")
        if token:
            sent["authorization"] = f"Bearer {token}"
        if declare:
            sent["content-length"] = str(sum(len(c) for c in chunks))
        else:
            sent["transfer-encoding"] = "chunked"
        pending = list(chunks)
        pulled = 0

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            if not pending:
                return {"type": "http.request", "body": b"", "more_body": False}
            pulled += 1
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("conveyor", 80),
        }
        await self.app(scope, receive, send)
        start = messages[0]
        return Answer(
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in messages[1:]),
            pulled,
        )


def serve(
    tmp_path: Path, body: Callable[[Live], Awaitable[None]], config: ServerConfig | None = None
) -> None:
    """Run `body` against the app (lifespan entered, no built-in runner) on a fresh store."""
    config = config or ServerConfig(runner_slots=0, delivery=False)
    home = tmp_path / "home"
    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))

    async def main() -> None:
        app = create_app(store, config)
        live = Live(
            app,
            store,
            create_token(store, "admin", ["admin"], user="root"),
            create_token(store, "agent", ["runner"]),
            config=config,
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        try:
            await asyncio.wait_for(body(live), 60)
        finally:
            await lifespan.__aexit__(None, None, None)

    try:
        asyncio.run(main())
    finally:
        store.close()


def megabytes(count: int, fill: bytes = b"[") -> list[bytes]:
    return [fill * MIB] * count


async def register(live: Live, repo: GitRepo) -> str:
    """A service `svc` with a webhook secret; returns the secret."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=live.app), base_url="http://c")
    async with client:
        r = await client.post(
            "/api/v1/services",
            json={"name": "svc", "repository": str(repo.path), "generate_webhook_secret": True},
            headers={"Authorization": f"Bearer {live.admin}"},
        )
    assert r.status_code == 201, r.text
    secret: str = r.json()["webhook_secret"]
    return secret


# --- a real server --------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Server(ServerProcess):
    """A ServerProcess started with extra options (and the command line before its own, such
    as `prlimit --nofile=...`)."""

    def __init__(self, home: Path, *options: str, prefix: tuple[str, ...] = ()) -> None:
        super().__init__(home)
        self.options = options
        self.prefix = prefix

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = conveyor_argv(
            "server", "--port", str(self.port), "--runners", "0", "--no-deliver", *self.options
        )
        self.process = Process(
            [*self.prefix, *argv],
            self.env,
            self.home.parent / "logs" / f"{self.home.name}-{self.starts}",
            self.home.parent,
        )
        until(self._answers, 20, "the server to answer")

    def _answers(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise AssertionError(f"the server exited:\n{self.process.stderr()}")
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        assert self.process is not None
        return self.process.stderr() + self.process.stdout()


def stream_body(port: int, head: bytes, total: int, watch: Callable[[], None]) -> tuple[int, bytes]:
    """Send `head`, then up to `total` body bytes in 1 MiB chunks until the server answers
    (or stops reading); returns (bytes sent, the answer's first bytes)."""
    chunk = b"[" * MIB
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1)
            watch()
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                answer += data
                if not data or b"\r\n\r\n" in answer:
                    break
            elif writable:
                try:
                    sent += sock.send(chunk[: total - sent])
                except (BrokenPipeError, ConnectionResetError):
                    continue  # closed by the server: its answer may be readable still
    return sent, answer
