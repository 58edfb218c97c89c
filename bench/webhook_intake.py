"""Webhook intake: signed GitHub push deliveries per second that a real `conveyor server`
accepts (verified, de-duplicated, recorded: HTTP 202), with 32 concurrent senders on this
machine. Turning each into a run happens afterwards in the background and is not timed here.
Also records the server's idle memory (RSS) before the load and after it."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server
from rawhttp import blast, request

from conveyor.forges.github import sign_github

DELIVERIES = 5000
CONCURRENCY = 32


def _repo(root: Path) -> tuple[Path, str]:
    repo = root / "repo"
    repo.mkdir()
    (repo / "conveyor.yml").write_text(
        "service: hooked\non:\n  push: { branches: [release] }\njobs:\n  a:\n    run: 'true'\n"
    )
    env = {
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(argv, cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True, env=env)
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    return repo, sha


def _requests(secret: str, sha: str) -> list[bytes]:
    out = []
    for n in range(DELIVERIES):
        # main is not in on.push.branches: accepted and recorded, but no run is made.
        body = json.dumps(
            {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": sha,
                "repository": {"full_name": "acme/hooked"},
                "pusher": {"name": "bench"},
                "commits": [],
            }
        ).encode()
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"bench-{n}",
            "X-Hub-Signature-256": sign_github(secret, body),
            "Content-Type": "application/json",
        }
        out.append(request("POST", "/api/v1/hooks/github/hooked", body, headers))
    return out


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-intake-") as tmp:
        root = Path(tmp)
        repo, sha = _repo(root)
        server = Server(root / "home", runners=1)
        server.cli("service", "add", "hooked", "--repo", str(repo))
        out = server.cli("service", "add", "hooked", "--repo", str(repo), "--webhook-secret")
        secret = out.split("(shown once): ")[1].strip()
        server.start()
        try:
            time.sleep(1.0)  # let start-up work settle before reading idle memory
            idle_rss = server.rss_kib()
            requests = _requests(secret, sha)
            elapsed, latencies, statuses = asyncio.run(
                blast("127.0.0.1", server.port, requests, CONCURRENCY)
            )
            loaded_rss = server.rss_kib()
            if statuses != {202: DELIVERIES}:
                raise RuntimeError(f"not every delivery was accepted: {statuses}")
        finally:
            server.stop()
    latencies.sort()
    return {
        "deliveries": DELIVERIES,
        "concurrency": CONCURRENCY,
        "accepted_per_second": round(DELIVERIES / elapsed),
        "latency_median_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 2),
        "server_idle_rss_mib": round(idle_rss / 1024, 1),
        "server_rss_after_load_mib": round(loaded_rss / 1024, 1),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
