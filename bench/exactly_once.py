"""Duplicate runs over 500 pushes to three servers on one PostgreSQL database (target 0).

Each push (a commit on a branch of its own) is announced to all three servers with one delivery
id, as a hook retrying against another server would, and to one of them with a second id, as a
forge's copy of the same push would: 2,000 announcements, 16 at a time. The servers have no
runners: what is counted is the runs queued (docs/decisions/0012-exactly-once.md).

Needs a PostgreSQL role that may create databases: CONVEYOR_BENCH_POSTGRES_URL (or
CONVEYOR_TEST_POSTGRES_URL), e.g. postgresql+psycopg://conveyor:conveyor@127.0.0.1:5433/conveyor.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from benchserver import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PUSHES = 500
WAITING = "SELECT count(*) FROM deliveries WHERE status IN ('received', 'claimed')"
SERVERS = 3
GIT = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _repo(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    repo = root / "repo"
    repo.mkdir()
    (repo / "conveyor.yml").write_text('service: fleet\njobs:\n  build:\n    run: "true"\n')
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "pipeline")
    parent, tree = _git(repo, "rev-parse", "HEAD"), _git(repo, "rev-parse", "HEAD^{tree}")
    pushes = []
    for n in range(PUSHES):
        sha = _git(repo, "commit-tree", tree, "-p", parent, "-m", f"push {n}")
        pushes.append((parent, sha))
        parent = sha
    return repo, pushes


def measure() -> dict[str, Any]:
    admin = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL") or os.environ.get(
        "CONVEYOR_TEST_POSTGRES_URL", ""
    )
    if not admin:  # `make bench` goes on without it, and says so
        return {"skipped": "set CONVEYOR_BENCH_POSTGRES_URL to a PostgreSQL role with CREATEDB"}
    name = f"conveyor_bench_{secrets.token_hex(4)}"
    maker = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with maker.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-exactly-once-") as tmp:
            root = Path(tmp)
            repo, pushes = _repo(root)
            base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
            env = {**base, "CONVEYOR_DATABASE_URL": url, "CONVEYOR_HOME": str(root / "h0")}

            def cli(*args: str) -> str:
                return subprocess.run(
                    [sys.executable, "-m", "conveyor", *args],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()

            cli("service", "add", "fleet", "--repo", str(repo))
            token = cli("token", "create", "hooks", "--scope", "admin").splitlines()[0]
            urls = []
            for n in range(SERVERS):
                port = free_port()
                home = root / f"h{n}"
                home.mkdir(exist_ok=True)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "conveyor", "server", "--port", str(port),
                         "--runners", "0", "--log-level", "warning"],
                        env={**env, "CONVEYOR_HOME": str(home)},
                        stdout=subprocess.DEVNULL,
                        stderr=(root / f"server-{n}.log").open("ab"),
                    )
                )  # fmt: skip
                urls.append(f"http://127.0.0.1:{port}/api/v1")
            for u in urls:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(f"{u}/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{u} did not start")
                    time.sleep(0.05)
            clients = [
                httpx.Client(base_url=u, headers={"Authorization": f"Bearer {token}"}, timeout=60)
                for u in urls
            ]

            def announce(n: int) -> list[int]:
                before, after = pushes[n]
                body = {
                    "repository": str(repo),
                    "ref": f"refs/heads/push-{n}",
                    "before": before,
                    "after": after,
                    "delivery": f"hook-{n}",
                }
                codes = [c.post("/hooks/git", json=body).status_code for c in clients]
                copy = body | {"delivery": f"copy-{n}"}
                return [*codes, clients[n % SERVERS].post("/hooks/git", json=copy).status_code]

            started = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                codes = [c for answer in pool.map(announce, range(PUSHES)) for c in answer]
            announced = time.perf_counter() - started
            engine = create_engine(url, poolclass=NullPool)
            with engine.connect() as conn:
                while True:
                    waiting = conn.execute(text(WAITING)).scalar()
                    conn.commit()
                    if waiting == 0:
                        break
                    if time.perf_counter() - started > 600:
                        raise RuntimeError("deliveries still waiting after 10 minutes")
                    time.sleep(0.2)
                processed = time.perf_counter() - started
                runs = conn.execute(text("SELECT count(*) FROM runs")).scalar() or 0
                distinct = conn.execute(text("SELECT count(DISTINCT sha) FROM runs")).scalar() or 0
                deliveries = conn.execute(text("SELECT count(*) FROM deliveries")).scalar()
            engine.dispose()
            for c in clients:
                c.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        with maker.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maker.dispose()
    return {
        "pushes": PUSHES,
        "servers": SERVERS,
        "announcements": len(codes),
        "server_errors": sum(c >= 500 for c in codes),
        "deliveries": deliveries,
        "runs": runs,
        "distinct_commits": distinct,
        "duplicate_runs": runs - distinct,
        "announced_s": round(announced, 2),
        "processed_s": round(processed, 2),
        "met": runs == distinct == PUSHES and not any(c >= 500 for c in codes),
    }


def section(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"## Duplicate runs over pushes to three servers\n\nNot measured: {r['skipped']}.\n"
    return f"""## Duplicate runs over {r["pushes"]} pushes to {r["servers"]} servers (target 0)

{r["servers"]} `conveyor server` processes on one PostgreSQL database (no runners: the runs
queued are what counts). Each of {r["pushes"]} pushes, a commit on a branch of its own, announced
to all three servers with one delivery id and to one of them with a second id (a forge's copy):
{r["announcements"]:,} announcements, 16 at a time.

| figure | value |
|---|---|
| duplicate runs | **{r["duplicate_runs"]}** ({r["runs"]} runs of {r["distinct_commits"]} commits) |
| 5xx answers | {r["server_errors"]} |
| deliveries recorded | {r["deliveries"]:,} |
| all announced / all processed | {r["announced_s"]} s / {r["processed_s"]} s |
"""


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
