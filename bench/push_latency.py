"""Push → first step started, and push → a one-step pipeline finished, through the git hook
that `conveyor hook install` puts in a bare repository, against a real `conveyor server`.
Buildbot 4.3 does the same in the same run (bench/buildbot_peer.py), through its own
post-receive hook.

Times come from the server's own records (the step's and the run's timestamps), measured from
the moment just before `git push` on the same machine's clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server

PUSHES = 50
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
PIPELINE = "service: pushed\non:\n  push: { branches: [main] }\njobs:\n  one:\n    run: 'true'\n"


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _wait_for_run(client: httpx.Client, sha: str, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        for run in client.get("/runs", params={"limit": 5}).json():
            if run["sha"] == sha and run["status"] in ("succeeded", "failed"):
                detail: dict[str, Any] = client.get(f"/runs/{run['id']}").json()
                return detail
        time.sleep(0.01)
    raise RuntimeError(f"no finished run for {sha} in time")


def measure(pushes: int = PUSHES) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-push-") as tmp:
        root = Path(tmp)
        bare, work = root / "shop.git", root / "work"
        _git("init", "-q", "--bare", "-b", "main", str(bare), cwd=root)
        _git("clone", "-q", str(bare), str(work), cwd=root)
        (work / "conveyor.yml").write_text(PIPELINE)
        _git("add", "-A", cwd=work)
        _git("commit", "-qm", "pipeline", cwd=work)
        server = Server(root / "home", runners=2)
        server.cli("service", "add", "pushed", "--repo", str(bare))
        admin = server.token("bench-admin", "admin")
        server.start()
        try:
            server.cli("hook", "install", str(bare), "--server", server.url, "--token", admin)
            client = httpx.Client(
                base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"}
            )
            first_step: list[float] = []
            finished: list[float] = []
            hook_return: list[float] = []
            for n in range(pushes + 1):
                (work / "counter").write_text(str(n))
                _git("add", "-A", cwd=work)
                _git("commit", "-qm", f"change {n}", cwd=work)
                sha = _git("rev-parse", "HEAD", cwd=work)
                pushed_at = time.time()
                started = time.monotonic()
                _git("push", "-q", "origin", "main", cwd=work)
                returned = time.monotonic() - started
                run = _wait_for_run(client, sha, time.monotonic() + 60)
                if run["status"] != "succeeded":
                    raise RuntimeError(f"run {run['id']} {run['status']}: {run['reason']}")
                if n == 0:
                    continue  # warm-up: first checkout, caches
                step = run["jobs"][0]["steps"][0]
                first_step.append(_stamp(step["started_at"]) - pushed_at)
                finished.append(_stamp(run["finished_at"]) - pushed_at)
                hook_return.append(returned)
            timeline = _timeline(root / "home" / "conveyor.db")
        finally:
            server.stop()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1),
        }

    return {
        "pushes": pushes,
        "push_to_first_step": summary(first_step),
        "push_to_finished": summary(finished),
        "git_push_returned": summary(hook_return),
        "last_push_timeline_ms": timeline,
    }


def _timeline(db: Path) -> dict[str, float]:
    """Milliseconds from the last change's arrival to each recorded step of its run."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        start_id, start = conn.execute(
            "SELECT id, ts FROM events WHERE type = 'change.received' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        rows = conn.execute(
            "SELECT type, ts FROM events WHERE id >= ? ORDER BY id", (start_id,)
        ).fetchall()
    origin = dt.datetime.fromisoformat(start)
    return {
        kind: round((dt.datetime.fromisoformat(ts) - origin).total_seconds() * 1000, 1)
        for kind, ts in rows
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else PUSHES), indent=2))
