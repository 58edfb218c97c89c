"""Delivery end to end in this process: releases made by the real `conveyor run`, deployments
carried out by a DeliveryController on the same data directory with real targets, real
processes and real HTTP checks. Nothing sleeps to synchronise: `settle` runs the controller
until no deployment can move any more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from conveyor.delivery.controller import DeliveryController
from conveyor.delivery.outbox import Outbox
from conveyor.runner.artifacts import ArtifactStore
from conveyor.settings import Settings as ConveyorSettings
from conveyor.store.db import Settings, Store, open_store
from conveyor.views.delivery import environments, list_deployments
from tests.conftest import Conveyor, GitRepo

# A service with nothing but the standard library: it answers its VERSION on every path and
# /healthz with 200 or 503 as its HEALTHY file says (or never, for "hang"), on 127.0.0.1:$PORT.
APP = """\
import http.server, os, pathlib, threading

VERSION = pathlib.Path("VERSION").read_text().strip()
HEALTH = pathlib.Path("HEALTHY").read_text().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz" and HEALTH == "hang":
            threading.Event().wait()
        code = 503 if self.path == "/healthz" and HEALTH != "yes" else 200
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

HEALTH = "health: { http: { path: /healthz, within: 5s, interval: 50ms } }"


# Staging checks and verifies each release, then production waits for a person of group ops.
STAGED_THEN_APPROVED = f"""
staging:
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
  verify: [{{ name: smoke, run: "true" }}]
production:
  after: staging
  approval: {{ approvers: [ops] }}
  deploy: {{ target: process, start: python3 app.py }}
  {HEALTH}
"""


def pipeline(environments: str, *, extra: str = "") -> str:
    return (
        "service: shop\njobs:\n  test:\n    run: 'true'\nenvironments:\n"
        + textwrap.indent(textwrap.dedent(environments).strip() + "\n", "  ")
        + textwrap.dedent(extra)
    )


def release(
    repo: GitRepo,
    conveyor: Conveyor,
    version: str,
    conveyor_yml: str,
    *,
    healthy: bool | str = True,
) -> int:
    """Commit the service at ``version`` and run its pipeline: returns the new release's id."""
    repo.commit(
        version,
        {
            "app.py": APP,
            "VERSION": version,
            "HEALTHY": healthy if isinstance(healthy, str) else "yes" if healthy else "no",
            "conveyor.yml": conveyor_yml,
        },
    )
    conveyor("run", check=True)
    return int(conveyor("releases", "--json").json()[0]["id"])


class Harness:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.store: Store = open_store(Settings.resolve(home))
        # Read here, as the server reads them at start (tests set them before).
        settings = ConveyorSettings.from_env()
        self.controller = DeliveryController(
            self.store,
            ArtifactStore(home / "artifacts"),
            poll_seconds=0.05,
            prometheus_url=settings.prometheus_url,
            keep_bundles=settings.keep_bundles,
        )
        self.outbox = Outbox(
            self.store,
            backoff=0.01,
            poll_seconds=0.05,
            base_url=settings.base_url,
            smtp_url=settings.smtp_url,
            mail_from=settings.mail_from,
        )

    async def settle(self, rounds: int = 50) -> None:
        """Tick until nothing starts and nothing runs (bounded)."""
        for _ in range(rounds):
            await self.controller.tick()
            if not self.controller._tasks:
                await self.controller.tick()
                if not self.controller._tasks:
                    return
            await self.controller.idle()
        raise AssertionError("deliveries did not settle")

    def env(self, name: str) -> dict[str, Any]:
        return next(e for e in environments(self.store, "shop") if e["environment"] == name)

    def deployments(self, environment: str | None = None) -> list[dict[str, Any]]:
        return list_deployments(self.store, service="shop", environment=environment)[::-1]

    async def get(self, url: str) -> httpx.Response:
        """Async: the environment's proxy runs on this event loop."""
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(url)

    async def close(self) -> None:
        await self.controller.close()
        self.store.close()


@asynccontextmanager
async def delivery(home: Path) -> AsyncIterator[Harness]:
    """A controller on ``home``; every release process it started is stopped afterwards."""
    h = Harness(home)
    try:
        yield h
    finally:
        await h.close()
        stop_released_processes(home)


def stop_released_processes(home: Path) -> None:
    """Processes started by the process target carry their release folder as cwd."""
    releases = str(home / "releases")
    from conveyor.targets import process as process_target

    # Ours first, so that they are reaped (not left as zombies or warned about).
    for pid, child in list(process_target._CHILDREN.items()):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if cwd.startswith(releases) or child.poll() is not None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            child.wait(timeout=10)
            process_target._CHILDREN.pop(pid, None)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd.startswith(releases):
            try:
                os.killpg(int(entry.name), signal.SIGKILL)
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
