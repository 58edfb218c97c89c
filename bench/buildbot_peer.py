"""Buildbot as a peer for the push latency benchmark: push -> first step started and
push -> one-step build finished, through Buildbot's own post-receive hook, on this machine.

Buildbot (pinned below, from PyPI) lives in a virtualenv of its own under bench/.cache, made
once per version and reused. Each run sets up, in a temporary folder: a bare git repository
and a working clone; a master (SQLite, no web server, PB on a 127.0.0.1 port) with one builder
whose only step is ShellCommand ["true"] on a local worker; a SingleBranchScheduler on `main`
with treeStableTimer=None. The bare repository's post-receive hook (bench/buildbot/post-receive)
calls `buildbot sendchange`, which delivers the change over PB to the master's PBChangeSource:
Buildbot's documented way for a commit hook (contrib/git_buildbot.py does the same over PB,
but is not shipped in the PyPI package).

Per push: commit, then time from just before `git push` until the master's database shows the
`true` step started (Buildbot's own `worker_preparation` pseudo-step comes just before it)
and the build complete. Buildbot records those times in whole epoch seconds, too coarse for
figures of about a second, so the database is polled every POLL_INTERVAL_S and the figure is
the time of the first poll that sees the change (an upper bound, off by at most one interval
plus a query); the recorded seconds are only checked for consistency.
The first WARMUP pushes (first build on the worker) are reported apart, not in the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

BUILDBOT_VERSION = "4.3.0"
WORKER_VERSION = "4.3.0"
HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "buildbot"
VENV = HERE / ".cache" / f"buildbot-{BUILDBOT_VERSION}-worker-{WORKER_VERSION}"
POLL_INTERVAL_S = 0.01
WARMUP = 1
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
# The build of one push, found by its revision: build times and the `true` step's start.
BUILD_QUERY = """
SELECT b.started_at, b.complete_at, b.results, s.started_at
FROM sourcestamps ss
JOIN buildset_sourcestamps bss ON bss.sourcestampid = ss.id
JOIN buildrequests br ON br.buildsetid = bss.buildsetid
JOIN builds b ON b.buildrequestid = br.id
LEFT JOIN steps s ON s.buildid = b.id AND s.name = 'true'
WHERE ss.revision = ?
"""


def ensure_venv() -> tuple[Path, str]:
    """The Buildbot virtualenv's bin folder, and whether it was reused or installed now."""
    marker = VENV / "installed.txt"
    wanted = f"buildbot=={BUILDBOT_VERSION} buildbot-worker=={WORKER_VERSION}"
    if marker.exists() and marker.read_text() == wanted:
        return VENV / "bin", "reused"
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    pip = subprocess.run(
        [
            str(VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            *wanted.split(),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if pip.returncode:
        raise RuntimeError(f"pip install failed:\n{pip.stdout}{pip.stderr}")
    marker.write_text(wanted)
    return VENV / "bin", "installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)  # p95 as in bench/webhook_intake.py: ordered[int(n * 0.95)]
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {
        "median_ms": ms(statistics.median(ordered)),
        "p95_ms": ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]),
        "min_ms": ms(ordered[0]),
        "max_ms": ms(ordered[-1]),
    }


class Peer:
    """A master and a worker started in the foreground, stopped by their PIDs."""

    def __init__(self, root: Path, bin_dir: Path):
        self.root, self.bin = root, bin_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pb_port = free_port()
        self.change_auth = "change:bench-change-pw"
        self.db_path = root / "master" / "state.sqlite"

    def setup(self) -> tuple[Path, Path]:
        bb, root = str(self.bin / "buildbot"), self.root
        subprocess.run(
            [bb, "create-master", "-r", "-q", str(root / "master")], check=True, timeout=60
        )
        shutil.copy(TEMPLATES / "master.cfg", root / "master" / "master.cfg")
        settings = {
            "pb_port": self.pb_port,
            "worker": "bench-worker",
            "worker_password": "bench-worker-pw",
            "change_password": self.change_auth.split(":", 1)[1],
        }
        (root / "master" / "settings.json").write_text(json.dumps(settings))
        subprocess.run(
            [
                str(self.bin / "buildbot-worker"),
                "create-worker",
                "-r",
                "-q",
                str(root / "worker"),
                f"127.0.0.1:{self.pb_port}",
                settings["worker"],
                settings["worker_password"],
            ],
            check=True,
            timeout=60,
        )
        bare, clone = root / "repo.git", root / "clone"
        git(root, "init", "-q", "--bare", "-b", "main", str(bare))
        git(root, "clone", "-q", str(bare), str(clone))
        git(clone, "symbolic-ref", "HEAD", "refs/heads/main")
        (clone / "bench.txt").write_text("0\n")
        git(clone, "add", "bench.txt")
        git(clone, "commit", "-q", "-m", "initial")
        git(clone, "push", "-q", "origin", "main")  # before the hook: not a measured change
        hook = (TEMPLATES / "post-receive").read_text()
        hook = hook.replace("@BUILDBOT@", bb).replace("@MASTER@", f"127.0.0.1:{self.pb_port}")
        hook = hook.replace("@AUTH@", self.change_auth)
        (bare / "hooks" / "post-receive").write_text(hook)
        (bare / "hooks" / "post-receive").chmod(0o755)
        return bare, clone

    def start(self, timeout: float = 60) -> None:
        for argv, log in (
            ([str(self.bin / "buildbot"), "start", "--nodaemon", "master"], "master.out"),
            ([str(self.bin / "buildbot-worker"), "start", "--nodaemon", "worker"], "worker.out"),
        ):
            with open(self.root / log, "wb") as out:
                self.procs.append(
                    subprocess.Popen(argv, cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
                )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"buildbot exited early:\n{self.logs()}")
            try:
                with closing(sqlite3.connect(self.db_path, timeout=1)) as db:
                    if db.execute("SELECT count(*) FROM connected_workers").fetchone()[0]:
                        return
            except sqlite3.OperationalError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"worker not connected within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("master/twistd.log", "master.out", "worker/twistd.log", "worker.out"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # worker first, then master
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def one_push(db: sqlite3.Connection, clone: Path, i: int, deadline_s: float = 60) -> dict[str, Any]:
    (clone / "bench.txt").write_text(f"{i}\n")
    git(clone, "commit", "-q", "-am", f"push {i}")
    sha = git(clone, "rev-parse", "HEAD")
    env = {**os.environ, **GIT_ENV}
    with tempfile.TemporaryFile() as out:
        t0 = time.time()
        push = subprocess.Popen(
            ["git", "push", "-q", "origin", "main"], cwd=clone, env=env, stdout=out, stderr=out
        )
        pushed = step = None
        while True:
            now = time.time()
            row = db.execute(BUILD_QUERY, (sha,)).fetchone()
            if pushed is None and push.poll() is not None:
                pushed = time.time()
            if row and step is None and row[3] is not None:
                step = now
            if row and row[1] is not None and step is not None:
                done = now
                break
            if now - t0 > deadline_s:
                out.seek(0)
                raise TimeoutError(
                    f"push {i}: no finished build in {deadline_s} s; "
                    f"push output: {out.read().decode(errors='replace')}"
                )
            time.sleep(POLL_INTERVAL_S)
        push.wait(timeout=30)
        pushed = pushed or time.time()
    _, build_done, results, step_started = row
    consistent = int(t0) <= step_started <= int(step) and step_started <= build_done <= int(done)
    return {
        "step_started_s": step - t0,
        "finished_s": done - t0,
        "push_returned_s": pushed - t0,
        "success": results == 0,
        "db_times_consistent": consistent,
    }


def versions(bin_dir: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('buildbot', 'buildbot-worker', 'Twisted', 'SQLAlchemy')}))"
    )
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def measure_buildbot(pushes: int = 50) -> dict[str, Any]:
    began = time.monotonic()
    bin_dir, venv_state = ensure_venv()
    venv_s = time.monotonic() - began
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-buildbot-") as tmp:
        peer = Peer(Path(tmp), bin_dir)
        try:
            setup_began = time.monotonic()
            _, clone = peer.setup()
            peer.start()
            ready_s = time.monotonic() - setup_began
            db = sqlite3.connect(peer.db_path, timeout=5, isolation_level=None)
            try:
                runs = [one_push(db, clone, i) for i in range(1, WARMUP + pushes + 1)]
            finally:
                db.close()
        finally:
            peer.stop()
    warm, measured = runs[:WARMUP], runs[WARMUP:]
    return {
        "peer": "buildbot",
        "versions": versions(bin_dir),
        "delivery": "post-receive hook -> `buildbot sendchange` -> PBChangeSource (PB, 127.0.0.1)",
        "pushes": len(measured),
        "poll_interval_ms": POLL_INTERVAL_S * 1000,
        "push_to_step_started": percentiles([r["step_started_s"] for r in measured]),
        "push_to_finished": percentiles([r["finished_s"] for r in measured]),
        "push_returned": percentiles([r["push_returned_s"] for r in measured]),
        "all_succeeded": all(r["success"] for r in runs),
        "db_times_consistent": all(r["db_times_consistent"] for r in runs),
        "warmup": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in warm
        ],
        "venv": venv_state,
        "venv_s": round(venv_s, 2),
        "setup_and_start_s": round(ready_s, 2),
        "total_s": round(time.monotonic() - began, 2),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(json.dumps(measure_buildbot(count), indent=2))
