"""Dispatch throughput: 1,000 one-step jobs (10 runs of 100 independent `true` jobs) over
4 runner agents (`conveyor runner`, one slot each) against a real `conveyor server` with no
built-in runner. Jobs per second from the first trigger to the last run finished."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from benchserver import Server

RUNS = 10
JOBS_PER_RUN = 100
AGENTS = 4
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="conveyor-dispatch-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        jobs = "".join(f"  j{i:03d}:\n    run: 'true'\n" for i in range(JOBS_PER_RUN))
        (repo / "conveyor.yml").write_text(f"service: wide\njobs:\n{jobs}")
        for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
            subprocess.run(argv, cwd=repo, check=True, env=GIT_ENV)
        subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True, env=GIT_ENV)
        server = Server(root / "home", runners=0, extra=("--max-runs", str(RUNS)))
        server.cli("service", "add", "wide", "--repo", str(repo))
        admin = server.token("admin", "admin")
        runner_token = server.token("agents", "runner")
        server.start()
        agents: list[subprocess.Popen[bytes]] = []
        try:
            for n in range(AGENTS):
                agents.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "conveyor",
                            "runner",
                            "--server",
                            server.url,
                            "--token",
                            runner_token,
                            "--name",
                            f"agent{n}",
                            "--slots",
                            "1",
                            "--work-dir",
                            str(root / f"agent{n}"),
                        ],
                        env=server.env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            client = httpx.Client(
                base_url=f"{server.url}/api/v1",
                headers={"Authorization": f"Bearer {admin}"},
                timeout=30,
            )
            started = time.perf_counter()
            for _ in range(RUNS):
                client.post("/runs", json={"service": "wide"}).raise_for_status()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                runs = client.get("/runs", params={"limit": RUNS}).json()
                if all(r["status"] in ("succeeded", "failed") for r in runs):
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            statuses = sorted({r["status"] for r in runs})
        finally:
            for agent in agents:
                agent.terminate()
            for agent in agents:
                try:
                    agent.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    agent.kill()
            server.stop()
    total = RUNS * JOBS_PER_RUN
    return {
        "jobs": total,
        "agents": AGENTS,
        "seconds": round(elapsed, 2),
        "jobs_per_second": round(total / elapsed, 1),
        "run_statuses": statuses,
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
