"""A step printing 200 MB of log, run by a remote runner agent and by the built-in runner.

Once, an agent never finished such a step: its heartbeat waited behind the log's reports, the
lease expired, the job was queued again twice and its log stored twice
(docs/decisions/0012-exactly-once.md). Measured here, each on a fresh `conveyor server`
(SQLite, the default 30 s lease): the time from queueing the run to its end, how often the job
was leased, and whether the log holds each line once.

Target: the agent takes at most 2× the built-in runner's time, leases the job once, and stores
the log once. `AGENT_LOG_MB` sets the size (default 200).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchserver import Server

LINE = "x" * 99  # 100 bytes a line with its newline
TARGET_RATIO = 2.0
GIT = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _repo(root: Path, lines: int, labels: str) -> Path:
    repo = root / f"repo-{labels or 'builtin'}"
    repo.mkdir()
    runs_on = f"    runs_on: [{labels}]\n" if labels else ""
    (repo / "conveyor.yml").write_text(
        # Above the default 64 MiB kept per step: the whole log goes through the agent.
        "service: loud\ndefaults:\n  log_limit: 256MiB\njobs:\n  build:\n"
        + runs_on
        + f"    run: awk 'BEGIN {{ for (i = 0; i < {lines}; i++) print \"{LINE}\" }}'\n"
    )
    env = {**os.environ, **GIT}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(argv, cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "loud"], cwd=repo, env=env, check=True)
    return repo


def _one(root: Path, mode: str, lines: int) -> dict[str, Any]:
    home = root / f"home-{mode}"
    server = Server(home, runners=1 if mode == "builtin" else 0)
    repo = _repo(root, lines, "" if mode == "builtin" else "agent")
    admin = server.token("admin", "admin")
    server.cli("service", "add", "loud", "--repo", str(repo))
    agent: subprocess.Popen[bytes] | None = None
    server.start()
    try:
        if mode == "agent":
            env = {k: v for k, v in server.env.items() if k != "CONVEYOR_HOME"}
            env |= {"CONVEYOR_URL": server.url, "CONVEYOR_TOKEN": server.token("a", "runner")}
            agent = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "runner", "--name", "bench",
                 "--labels", "agent", "--work-dir", str(root / "agent")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(root / "agent.log").open("ab"),
            )  # fmt: skip
        http = httpx.Client(
            base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"}
        )
        started = time.perf_counter()
        run_id = http.post("/runs", json={"service": "loud"}).json()["id"]
        deadline = started + 1800
        while True:
            status = http.get(f"/runs/{run_id}", timeout=30).json()["status"]
            if status in {"succeeded", "failed", "cancelled", "interrupted"}:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the {mode} run did not end within 30 minutes")
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        http.close()
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        server.stop()
    db = sqlite3.connect(home / "conveyor.db")
    try:
        stored, distinct = db.execute(
            "SELECT count(*), count(DISTINCT seq) FROM log_lines WHERE step_position = 0"
        ).fetchone()
        leases = db.execute("SELECT lease_token FROM jobs").fetchone()[0]
        requeued = db.execute(
            "SELECT count(*) FROM events WHERE type = 'taskrun.requeued'"
        ).fetchone()[0]
    finally:
        db.close()
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "lines_stored": stored,
        "log_stored_once": stored == distinct == lines,
        "leases": leases,
        "requeued": requeued,
    }


def measure() -> dict[str, Any]:
    megabytes = int(os.environ.get("AGENT_LOG_MB", "200"))
    lines = megabytes * 10_000
    with tempfile.TemporaryDirectory(prefix="conveyor-agent-log-") as tmp:
        builtin = _one(Path(tmp), "builtin", lines)
        agent = _one(Path(tmp), "agent", lines)
    ratio = agent["seconds"] / builtin["seconds"]
    return {
        "megabytes": megabytes,
        "lines": lines,
        "builtin": builtin,
        "agent": agent,
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO
        and agent["leases"] == 1
        and agent["log_stored_once"]
        and agent["status"] == "succeeded",
    }


def section(r: dict[str, Any]) -> str:
    b, a = r["builtin"], r["agent"]
    return f"""## A {r["megabytes"]} MB log through a runner agent (target ≤ {r["target_ratio"]:g}× the built-in runner)

One step printing {r["lines"]:,} lines of 100 bytes (`awk`, `log_limit: 256MiB` so that all of
it is kept), on a fresh `conveyor server` (SQLite, 30 s leases) each: by the built-in runner,
and by a `conveyor runner` agent on the same machine. From queueing the run to its end.

| runner | time | status | leases | requeued | lines stored | each once |
|---|---|---|---|---|---|---|
| built-in | {b["seconds"]} s | {b["status"]} | {b["leases"]} | {b["requeued"]} | {b["lines_stored"]:,} | {b["log_stored_once"]} |
| agent | **{a["seconds"]} s** ({r["ratio"]}×) | {a["status"]} | {a["leases"]} | {a["requeued"]} | {a["lines_stored"]:,} | {a["log_stored_once"]} |
"""  # noqa: E501


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
