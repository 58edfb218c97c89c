"""Production during a server crash, and what the edge costs (decision 0014).

A real `conveyor server` deploys a stdlib HTTP service (tests/delivery/harness.py's APP) to a
`production` environment of the process target; a load generator (tests/loadgen.py: a fresh
connection per request, paced at RATE per second) runs against the stable port while the
server is killed with -9 and started again, ROUNDS times. Measured twice: with the detached edge
(the default) and with `--edge embedded` (the stable port inside the server, as before 0014).

Latency: SAMPLES sequential requests, each on a fresh connection, alternating between the
release's own port and the stable port through the edge; the difference of the medians is what
the edge adds to a request.

Reuses the test helpers (real processes, bounded waits): run from the repository root.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import GitRepo
from tests.delivery.harness import APP, stop_released_processes
from tests.loadgen import Load
from tests.serverproc import ServerProcess, until

RATE = 50.0
ROUNDS = 3
SAMPLES = 500
PIPELINE = """\
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    deploy: { target: process, start: python3 app.py, strategy: blue-green }
    health: { http: { path: /healthz, within: 10s, interval: 50ms } }
"""


def _production(server: ServerProcess) -> dict[str, Any]:
    found = server.api("GET", "/environments", params={"service": "shop"}).json()
    return next((dict(e) for e in found if e["environment"] == "production"), {})


def _once(port: int) -> float:
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(65536):
            pass
    return time.perf_counter() - began


def _round(edge: str, folder: Path) -> dict[str, Any]:
    repo = GitRepo(folder / "repo")
    repo.path.mkdir(parents=True)
    repo.git("init", "-q", "-b", "main")
    repo.commit("v1", {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": PIPELINE})
    server = ServerProcess(folder / "home", runners=1)
    server.env["CONVEYOR_EDGE"] = edge
    server.admin = server.token("admin", "admin")
    server.add_service("shop", repo.path)
    try:
        server.start()
        server.trigger("shop")
        env = until(lambda: _production(server).get("healthy") and _production(server), 60, "v1")
        stable = int(env["url"].rsplit(":", 1)[1])
        restarts: list[float] = []
        with Load(stable, rate=RATE, max_requests=int(RATE * 120)) as load:
            for _ in range(ROUNDS):
                mark = load.sent
                until(lambda m=mark: load.sent >= m + RATE, 30, "a second of load")
                server.kill9()
                began = time.monotonic()
                server.start()
                restarts.append(time.monotonic() - began)
            mark = load.sent
            until(lambda: load.sent >= mark + RATE, 30, "a second of load after")
        result: dict[str, Any] = {
            "requests": load.sent,
            "failed": load.failed,
            "restart_s_median": round(statistics.median(restarts), 2),
            "first_failures": [why for _, why in load.failures[:3]],
        }
        if edge == "detached":
            result["latency"] = _latency(server, stable)
        return result
    finally:
        server.stop()
        stop_released_processes(server.home)


def _latency(server: ServerProcess, stable: int) -> dict[str, Any]:
    status = json.loads(server.cli("edge", "status", "--json"))
    direct = int(status["routes"][0]["upstream"])
    via_edge, straight = [], []
    for _ in range(SAMPLES):
        straight.append(_once(direct))
        via_edge.append(_once(stable))

    def ms(values: list[float], q: float) -> float:
        return round(sorted(values)[int(q * (len(values) - 1))] * 1000, 3)

    return {
        "samples": SAMPLES,
        "direct_median_ms": ms(straight, 0.5),
        "edge_median_ms": ms(via_edge, 0.5),
        "direct_p99_ms": ms(straight, 0.99),
        "edge_p99_ms": ms(via_edge, 0.99),
        "added_median_ms": round(
            (statistics.median(via_edge) - statistics.median(straight)) * 1000, 3
        ),
    }


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        detached = _round("detached", Path(tmp) / "detached")
        embedded = _round("embedded", Path(tmp) / "embedded")
    return {
        "rate": RATE,
        "rounds": ROUNDS,
        "detached": detached,
        "embedded": embedded,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def section(o: dict[str, Any]) -> str:
    d, e, lat = o["detached"], o["embedded"], o["detached"]["latency"]
    return f"""## Production through server crashes (target: 0 failed requests)

A real `conveyor server` serves a stdlib HTTP service in `production` (process target,
blue-green); {o["rate"]:g} requests/s, each on a fresh connection, against the stable port while
the server is killed with -9 and started again, {o["rounds"]} times (median restart
{d["restart_s_median"]} s until its API answers).

| stable port held by | requests | failed |
|---|---|---|
| the edge (`conveyor edge`, default) | {d["requests"]} | **{d["failed"]}** |
| the server (`--edge embedded`) | {e["requests"]} | {e["failed"]} |

What the edge adds to a request (fresh connection, {lat["samples"]} requests each way,
alternating): direct {lat["direct_median_ms"]} ms median / {lat["direct_p99_ms"]} ms p99,
through the edge {lat["edge_median_ms"]} ms / {lat["edge_p99_ms"]} ms: \
**+{lat["added_median_ms"]} ms** at the median.
"""


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
