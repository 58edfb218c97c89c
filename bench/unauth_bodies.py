"""Unauthenticated bodies: the RSS of a real `conveyor server` (fresh home, SQLite, no runner)
while CLIENTS clients at once each start sending a BODY_MB MB body without a token (target:
no growth beyond the idle figure + 50 MB).

The review behind issue 12 sent one 300 MB JSON body without a token and watched the server go
from 166 MB to 1 GB before it answered 401. Each scenario here is CLIENTS raw connections that
send their headers, then 1 MiB chunks as fast as the server takes them, until it answers (or
stops reading); a thread samples VmRSS every SAMPLE_S, and the peak is the larger of the
samples and the kernel's VmHWM. Scenarios, one after the other against the same server:

- POST /api/v1/runs (FastAPI parses its JSON body) with Content-Length, and chunked;
- POST /api/v1/hooks/alertmanager (a token route that reads its own body);
- POST /api/v1/hooks/github/<service> with a wrong signature: no token exists for a forge
  webhook, and its signature covers the body, so the body is read (up to the webhook limit,
  all such bodies together up to the unauthenticated budget) before the 401.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server
from server_memory import Sampler, status_kib

from conveyor.forges.github import sign_github

CLIENTS = 20
BODY_MB = 100
SETTLE_S = 5.0
SAMPLE_S = 0.02
CHUNK = b"[" * 2**20
SERVICE = "hooked"


def _send(port: int, head: bytes, total: int, chunked: bool, out: dict[str, Any]) -> None:
    """One client: `head`, then up to `total` body bytes until the server answers."""
    sent = 0
    answer = b""
    # A chunked body is 1 MiB chunks, each framed with its size.
    piece = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n" if chunked else CHUNK
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() - began < 120:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1)
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
                    sent += sock.send(piece if chunked else piece[: total - sent])
                except (BrokenPipeError, ConnectionResetError):
                    continue  # closed by the server: its answer may be readable still
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"
    out.update(status=status, sent=sent, seconds=time.monotonic() - began)


def _scenario(
    server: Server, path: str, headers: dict[str, str], chunked: bool, body_mb: int = BODY_MB
) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    before = status_kib(pid)["VmRSS"]
    total = body_mb * 10**6
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    sampler = Sampler(pid)
    sampler.start()
    results: list[dict[str, Any]] = [{} for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=_send, args=(server.port, head, total, chunked, out))
        for out in results
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    seconds = time.monotonic() - began
    sampler.halt.set()
    sampler.join()
    after = status_kib(pid)
    samples = [kib for _, kib in sampler.samples]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.get("status", "none")] = statuses.get(r.get("status", "none"), 0) + 1
    return {
        "path": path,
        "chunked": chunked,
        "body_mb": body_mb,
        "rss_before_mib": round(before / 1024, 1),
        "peak_sampled_mib": round(max(samples, default=before) / 1024, 1),
        "rss_after_mib": round(after["VmRSS"] / 1024, 1),
        "hwm_mib": round(after["VmHWM"] / 1024, 1),
        "statuses": dict(sorted(statuses.items())),
        "mib_sent_per_client_max": round(max(r.get("sent", 0) for r in results) / 2**20, 1),
        "mib_sent_total": round(sum(r.get("sent", 0) for r in results) / 2**20, 1),
        "seconds": round(seconds, 2),
    }


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-unauth-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        server = Server(root / "home", runners=0)
        server.cli("service", "add", SERVICE, "--repo", str(repo), "--webhook-secret")
        load_average = round(os.getloadavg()[0], 2)
        server.start()
        try:
            assert server.proc is not None
            time.sleep(SETTLE_S)  # the idle figure is of a server left alone after start-up
            idle = status_kib(server.proc.pid)
            forge = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign_github("?", b"x")}
            scenarios: list[tuple[str, dict[str, str], bool, int]] = [
                ("/api/v1/runs", {}, False, BODY_MB),
                ("/api/v1/runs", {}, True, BODY_MB),
                ("/api/v1/hooks/alertmanager", {}, False, BODY_MB),
                (f"/api/v1/hooks/github/{SERVICE}", forge, False, BODY_MB),
                # Within the webhook limit (25 MiB): read, up to the shared budget, then 401.
                (f"/api/v1/hooks/github/{SERVICE}", forge, False, 20),
            ]
            runs = [_scenario(server, *scenario) for scenario in scenarios]
            settled = status_kib(server.proc.pid)
        finally:
            server.stop()
    idle_mib = idle["VmRSS"] / 1024
    # Sampled peaks: VmHWM also holds start-up's peak, before the idle figure (reported too).
    token_peak = max(r["peak_sampled_mib"] for r in runs[:3])
    overall_peak = max(r["peak_sampled_mib"] for r in runs)
    return {
        "clients": CLIENTS,
        "body_mb": BODY_MB,
        "load_average_at_start": load_average,
        "idle_rss_mib": round(idle_mib, 1),
        "idle_hwm_mib": round(idle["VmHWM"] / 1024, 1),
        "token_routes_peak_mib": round(token_peak, 1),
        "token_routes_growth_mib": round(token_peak - idle_mib, 1),
        "peak_mib": round(overall_peak, 1),
        "growth_mib": round(overall_peak - idle_mib, 1),
        "settled_rss_mib": round(settled["VmRSS"] / 1024, 1),
        "scenarios": runs,
    }


def section(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {s['path']}{' (chunked)' if s['chunked'] else ''}, {s['body_mb']} MB | "
        f"{', '.join(f'{n}× {code}' for code, n in s['statuses'].items())} | "
        f"{s['mib_sent_per_client_max']} MiB | {s['peak_sampled_mib']} MiB | {s['seconds']} s |"
        for s in r["scenarios"]
    )
    return f"""## Unauthenticated bodies (target: RSS ≤ idle + 50 MB)

A real `conveyor server` (fresh home, SQLite, no runner); {r["clients"]} clients at once each \
start a {r["body_mb"]} MB body without a token and send 1 MiB chunks until the server answers \
(bench/unauth_bodies.py). Idle RSS {r["idle_rss_mib"]} MiB; load average (1 min) before the \
start: {r["load_average_at_start"]}.

| route | answers | most sent by one client | peak RSS (sampled) | wall |
|---|---|---|---|---|
{rows}

Token routes: peak **{r["token_routes_peak_mib"]} MiB**, {r["token_routes_growth_mib"]} MiB \
over idle. With the forge webhook (its body is read to check the signature, within the \
webhook limit and the shared budget for unauthenticated bodies): peak {r["peak_mib"]} MiB, \
{r["growth_mib"]} MiB over idle; settled afterwards: {r["settled_rss_mib"]} MiB.
"""


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
