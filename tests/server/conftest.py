"""The HTTP API in-process: the real app and its background loops (dispatcher, intake, built-in
runner) on a real store (SQLite and PostgreSQL), driven through httpx against real git repositories.

There is no pytest-asyncio: each test hands an async body to `serve`, which runs it with
`asyncio.run` inside the app's lifespan.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from conveyor.server.app import ServerConfig, create_app
from conveyor.server.tokens import create_token
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Delivery, Event, Run

BASE_URL = "http://conveyor"
API = "/api/v1"
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted", "superseded"}
# Longest a single test may take end to end; a hang fails with this instead of pytest-timeout.
TEST_BUDGET_SECONDS = 45.0
SHUTDOWN_SECONDS = 10.0


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Like httpx.ASGITransport, but the response body arrives while the app is still sending it.

    httpx.ASGITransport collects the whole body before returning the response, so a client can
    never react to the first event of a server-sent-events stream (the app only ends the stream
    after the run ends). Used only for the log stream test.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
        }
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        disconnected = asyncio.Event()
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await messages.put(message)

        task = asyncio.create_task(self.app(scope, receive, send))
        getter = asyncio.ensure_future(messages.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            task.result()  # raises the app's exception, if any
            raise AssertionError("the app ended without starting a response")
        start = getter.result()
        assert start["type"] == "http.response.start", start

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await messages.get()
                    if message["type"] != "http.response.body":
                        continue
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body", False):
                        return
            finally:
                disconnected.set()
                try:
                    await asyncio.wait_for(task, 5)
                except TimeoutError:
                    task.cancel()
                    raise AssertionError(
                        "the app went on with the response after the client went away"
                    ) from None

        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_Stream(chunks()),
            request=request,
        )


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]


@dataclass
class Api:
    """A running server and a client for it, with an admin token."""

    app: FastAPI
    store: Store
    config: ServerConfig
    client: httpx.AsyncClient
    admin: str
    home: Path
    _tokens: int = field(default=0)

    # --- tokens and requests ---------------------------------------------------------------

    def token(self, *scopes: str, user: str | None = None) -> str:
        self._tokens += 1
        return create_token(self.store, f"token-{self._tokens}", list(scopes), user)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return await self.client.get(API + path, headers=self.auth(token or self.admin), **kw)

    async def post(
        self, path: str, json: Any = None, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = self.auth(token or self.admin) | kw.pop("headers", {})
        return await self.client.post(API + path, json=json, headers=headers, **kw)

    # --- services and runs -----------------------------------------------------------------

    async def register(self, name: str, repository: Path | str, **extra: Any) -> dict[str, Any]:
        r = await self.post("/services", {"name": name, "repository": str(repository), **extra})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def trigger(self, service: str, rev: str = "HEAD", **extra: Any) -> dict[str, Any]:
        r = await self.post("/runs", {"service": service, "rev": rev, **extra})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def run(self, run_id: int) -> dict[str, Any]:
        r = await self.get(f"/runs/{run_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def wait_run(self, run_id: int, timeout: float = 20.0) -> dict[str, Any]:
        """The run once it has ended, polled through the API."""
        run: dict[str, Any] = {}

        async def ended() -> bool:
            nonlocal run
            run = await self.run(run_id)
            return run["status"] in TERMINAL

        await until(ended, timeout, f"run {run_id} to end (last seen: {run.get('status')})")
        return run

    async def logs(self, run_id: int) -> list[str]:
        r = await self.get(f"/runs/{run_id}/logs")
        assert r.status_code == 200, r.text
        return [line["text"] for line in r.json()["lines"]]

    # --- the store, read directly to check what was (not) recorded -------------------------

    def count(self, model: Any, *where: Any) -> int:
        with self.store.session() as session:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def deliveries(self) -> list[Delivery]:
        with self.store.session() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id)))

    def nothing_received(self) -> None:
        assert self.count(Delivery) == 0
        assert self.count(Run) == 0
        assert self.count(Event, Event.type == "change.received") == 0


async def until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _shut_down(lifespan: Any) -> None:
    """Leave the app's lifespan (its background loops stop); fail clearly if that hangs."""
    exiting = asyncio.ensure_future(lifespan.__aexit__(None, None, None))
    done, _ = await asyncio.wait({exiting}, timeout=SHUTDOWN_SECONDS)
    if done:
        exiting.result()
        return
    stuck = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task is exiting:
            continue
        frames = task.get_stack()
        where = [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in frames]
        stuck.append(f"{task.get_name()} {task.get_coro()!r}: " + " <- ".join(where))
        task.cancel()
    raise AssertionError(
        f"the server did not stop within {SHUTDOWN_SECONDS:g}s; still running:\n" + "\n".join(stuck)
    )


Body = Callable[[Api], Awaitable[None]]
Serve = Callable[..., None]


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Serve]:
    """serve(body, config=None): start the app on a fresh store (SQLite, and PostgreSQL) and
    run `body(api)` in it."""
    home = tmp_path / "home"
    stores: list[Store] = []

    async def main(body: Body, config: ServerConfig) -> None:
        store = open_store(Settings(home=home, database_url=database_url))
        stores.append(store)
        app = create_app(store, config)
        admin = create_token(store, "admin", ["admin"], user="root")
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE_URL
            ) as client:
                api = Api(app, store, config, client, admin, home)
                await asyncio.wait_for(body(api), TEST_BUDGET_SECONDS)
        finally:
            await _shut_down(lifespan)

    def run(body: Body, config: ServerConfig | None = None) -> None:
        asyncio.run(main(body, config or ServerConfig(runner_slots=2)))

    yield run
    for store in stores:
        store.close()
