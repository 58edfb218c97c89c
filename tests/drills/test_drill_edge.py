"""Production keeps answering whatever happens to the server (decision 0014): under a steady
50 requests/s on production's stable port, the server is killed with -9, stopped with SIGTERM
(and must be gone within 10 s), frozen with SIGSTOP for longer than a lease, and restarted each
time, as an upgrade would; not one request may fail. After the restarts a new deployment
switches traffic through the same edge process, still without a failed request."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.edge.client import edge_pid
from tests.conftest import GitRepo
from tests.delivery.harness import APP, stop_released_processes
from tests.loadgen import Load
from tests.serverproc import ServerProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

LEASE = 2.0
RATE = 50.0
# The longest the drill may take under load: a bound on the load, not a wait.
MAX_REQUESTS = int(RATE * 90)


def commit(repo: GitRepo, version: str) -> None:
    repo.commit(
        version,
        {
            "app.py": APP,
            "VERSION": version,
            "HEALTHY": "yes",
            "conveyor.yml": """\
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    deploy: { target: process, start: python3 app.py, strategy: blue-green }
    health: { http: { path: /healthz, within: 10s, interval: 50ms } }
""",
        },
    )


def production(server: ServerProcess) -> dict[str, Any]:
    found = server.api("GET", "/environments", params={"service": "shop"}).json()
    return next((dict(e) for e in found if e["environment"] == "production"), {})


@pytest.fixture
def server(tmp_path: Path, repo: GitRepo) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home", runners=1, lease_seconds=LEASE)
    srv.admin = srv.token("admin", "admin")
    srv.add_service("shop", repo.path)
    try:
        yield srv
    finally:
        srv.stop()  # the server, then its edge
        stop_released_processes(srv.home)


def served(load: Load, more: int) -> None:
    """Wait (bounded) until ``more`` further requests were sent: the outage lasted that long."""
    target = load.sent + more
    until(lambda: load.sent >= target, more / RATE + 10, f"{more} more requests")


def test_production_answers_through_kill_9_sigterm_sigstop_and_restarts_of_the_server(
    server: ServerProcess, repo: GitRepo
) -> None:
    commit(repo, "v1")
    server.start()
    server.trigger("shop")
    env = until(lambda: production(server).get("healthy") and production(server), 40, "v1 live")
    port = int(env["url"].rsplit(":", 1)[1])
    edge = edge_pid(server.home)
    assert edge is not None
    assert server.process is not None
    assert os.getsid(edge) != os.getsid(server.process.pid)  # not in the server's session

    with Load(port, rate=RATE, max_requests=MAX_REQUESTS) as load:
        served(load, 25)

        server.kill9()
        served(load, 50)  # a second with no server at all
        server.start()
        served(load, 25)

        began = time.monotonic()
        server.process.stop(timeout=10)  # SIGTERM (Ctrl-C is SIGINT, handled the same)
        stop_seconds = time.monotonic() - began
        served(load, 50)
        server.start()  # right after a stop: nothing of the old process holds a port

        os.kill(server.process.pid, signal.SIGSTOP)
        served(load, int(RATE * (LEASE + 1)))  # frozen for longer than a lease
        os.kill(server.process.pid, signal.SIGCONT)
        served(load, 25)

        commit(repo, "v2")  # a new deployment after all that, through the same edge
        server.trigger("shop")
        until(lambda: load.answers["v2"] >= 25, 60, "v2 serving on the stable port")
    print(
        f"\n{load.sent} requests at {RATE:g}/s, {load.failed} failed; answers {dict(load.answers)};"
        f" SIGTERM stop took {stop_seconds:.2f} s"
    )
    assert load.failures == []
    assert stop_seconds < 10
    assert edge_pid(server.home) == edge
    assert production(server)["url"] == env["url"]
    assert load.answers["v1"] > 0
