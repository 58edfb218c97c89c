"""The data directory read-only, or the disk full under a running server: a clear message and
no traceback, reads still answered, nothing acknowledged lost and the store intact after.

Root ignores permission bits, so the read-only drill runs the commands without the capability
that lets it (CAP_DAC_OVERRIDE, dropped with util-linux's `setpriv`). A full disk is a file-size
limit (RLIMIT_FSIZE) on the server process: writes past it fail as on a full disk (SQLite sees
EFBIG, "disk I/O error", where a full disk gives ENOSPC, "database or disk is full"), with no
mount or root needed, and the limit can be lifted on the live process to free space again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GitRepo
from tests.serverproc import ServerProcess, conveyor_argv, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

TRACEBACK = "Traceback (most recent call last)"
# The room left on the "disk" past the store's size: a few dozen changes.
ROOM = 256 * 1024


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def digest(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir())}


def without_dac_override(argv: list[str]) -> list[str]:
    """`argv` run without root's right to write whatever the permission bits say."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *argv]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(stat.S_IMODE(mode) & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))


@pytest.fixture
def server(tmp_path: Path, repo: GitRepo) -> ServerProcess:
    """A data directory with a store, an admin token and a service (the server not started)."""
    repo.commit("pipeline", {"conveyor.yml": "service: svc\njobs:\n  build:\n    run: 'true'\n"})
    srv = ServerProcess(tmp_path / "home")
    srv.admin = srv.token("admin", "admin")
    srv.add_service("svc", repo.path)
    return srv


def test_a_read_only_data_directory_is_refused_with_a_clear_message(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = digest(server.home)
    empty = tmp_path / "empty-home"
    empty.mkdir()
    with read_only(server.home), read_only(empty):
        for home, args in [
            (server.home, ["runs"]),
            (server.home, ["server", "--port", str(server.port), "--runners", "0"]),
            (empty, ["runs"]),  # a fresh, read-only CONVEYOR_HOME: no store can be made
        ]:
            out = subprocess.run(
                without_dac_override(conveyor_argv(*args)),
                env={**server.env, "CONVEYOR_HOME": str(home)},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert out.returncode == 1, out.stdout + out.stderr
            assert TRACEBACK not in out.stdout + out.stderr
            assert "error: cannot open the database" in out.stderr
            assert f"the data directory {home} is read-only" in out.stderr, out.stderr
    assert digest(server.home) == before
    assert list(empty.iterdir()) == []
    assert integrity(server.home / "conveyor.db") == "ok"
    assert "svc" in server.cli("service", "list")  # and it works once writable again


def _file_size_limit(limit: int) -> None:
    # Ignored, SIGXFSZ would otherwise kill the process at the first write past the limit.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Only the soft limit: lowering the hard one could not be undone without CAP_SYS_RESOURCE.
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


def test_a_full_disk_refuses_changes_clearly_keeps_reads_and_loses_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    limit = (server.home / "conveyor.db").stat().st_size + ROOM
    logs = tmp_path / "server.log"
    with logs.open("wb") as log:
        proc = subprocess.Popen(
            conveyor_argv("server", "--port", str(server.port), "--runners", "0"),
            env=server.env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: _file_size_limit(limit),  # noqa: PLW1509 (no threads forked)
        )
    # No keep-alive: a refused request must not leave a broken connection for the next one.
    http = httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.admin}"},
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    )

    def push(i: int) -> httpx.Response:
        after = hashlib.sha256(f"push {i}".encode()).hexdigest()[:40]
        change = {"repository": str(server.home.parent / "repo"), "ref": "refs/heads/main",
                  "before": "0" * 40, "after": after}  # fmt: skip
        return http.post("/hooks/git", json=change)

    try:

        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return http.get("/health").status_code == 200
            return False

        until(up, 20, "the server to answer")
        accepted, started = 0, time.monotonic()
        while (r := push(accepted)).status_code == 202:
            accepted += 1
            assert accepted < 2000, "the file-size limit never made a write fail"
        full = time.monotonic() - started
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "store_unavailable"
        assert "nothing was recorded" in error["message"]
        assert "free space" in error["hint"]
        # Reads go on while the disk is full.
        assert http.get("/health").status_code == 200
        assert [s["name"] for s in http.get("/services").json()] == ["svc"]
        assert http.get("/runs").status_code == 200

        # Space is freed: the same process takes changes again.
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        until(lambda: push(accepted).status_code == 202, 10, "a change accepted again")
        accepted += 1
    finally:
        http.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    output = logs.read_text(errors="replace")
    # uvicorn shuts down gracefully, then re-raises SIGTERM to end as the signal asked.
    assert code in (0, -signal.SIGTERM), output
    assert TRACEBACK not in output
    assert "the store failed" in output
    db = server.home / "conveyor.db"
    assert integrity(db) == "ok"
    recorded = server.query("SELECT count(*) FROM deliveries")[0][0]
    assert recorded == accepted  # every acknowledged change kept, no refused one recorded
    print(f"disk full after {accepted - 1} changes ({full:.2f}s); {recorded} recorded, store ok")
