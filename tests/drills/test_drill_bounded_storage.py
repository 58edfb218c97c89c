"""Bounded storage (issue 13, docs/decisions/0016-bounded-storage.md), drilled with real
servers, runners and steps: the server-wide log ceiling holds, a job leased again logs as its
own attempt, and a data directory that fills up during a log-heavy run corrupts nothing and
is recovered from without a restart.

The full disk is a file-size limit (RLIMIT_FSIZE) set on the live server process, as in
tests/drills/test_drill_storage.py: writes past it fail as on a full disk, and lifting it is
space coming back."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GitRepo
from tests.drills.test_drill_storage import TRACEBACK, integrity
from tests.serverproc import Processes, ServerProcess, conveyor_argv, processes, until

# The fixture of real server processes (tests/serverproc.py).
__all__ = ["processes"]

pytestmark = [pytest.mark.integration, pytest.mark.drill]

LINE = "a line of a chatty step, padded to about sixty bytes......"
FULL_MARKER = "the server's log store is full"


def _bytes(server: ServerProcess) -> int:
    """The bytes of every stored log line, counted by SQLite."""
    total = server.query("SELECT COALESCE(SUM(length(CAST(text AS BLOB))), 0) FROM log_lines")
    return int(total[0][0])


def _job_lines(server: ServerProcess, run_id: int) -> list[str]:
    return [line["text"] for line in server.logs(run_id)]


@pytest.mark.timeout(90)
def test_the_log_store_ceiling_holds_removing_the_oldest_finished_runs_logs_first(
    tmp_path: Path, repo: GitRepo
) -> None:
    ceiling = 64 * 1024
    pipeline = (
        "service: loud\njobs:\n  build:\n"
        f"    run: awk 'BEGIN {{ for (i = 0; i < 3000; i++) print \"{LINE}\" }}'\n"
    )
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    server = ServerProcess(tmp_path / "home", runners=1)
    server.env["CONVEYOR_LOG_STORE_LIMIT"] = "64KiB"
    server.admin = server.token("admin", "admin")
    server.add_service("loud", repo.path)
    server.start()
    try:
        first = server.trigger("loud")["id"]
        assert server.wait_run(first, 40)["status"] == "succeeded"  # the job is not failed
        lines = _job_lines(server, first)
        markers = [t for t in lines if FULL_MARKER in t]
        assert len(markers) == 1
        assert lines[-1] == markers[0], lines[-3:]  # nothing stored after it
        marker = len(markers[0].encode())
        assert _bytes(server) <= ceiling + marker
        assert 3000 > len(lines) > 500  # what fitted was kept, in order
        assert lines[1:4] == [LINE] * 3 or LINE in lines[0]

        second = server.trigger("loud")["id"]
        assert server.wait_run(second, 40)["status"] == "succeeded"
        # The first run finished, so its log made room for the second one's.
        old = _job_lines(server, first)
        assert len(old) == 1, old
        assert "this job's log was removed" in old[0]
        assert "CONVEYOR_LOG_STORE_LIMIT" in old[0]
        lines = _job_lines(server, second)
        assert sum(FULL_MARKER in t for t in lines) == 1
        assert _bytes(server) <= ceiling + marker
        # The store's own count agrees with what it holds.
        usage = server.query("SELECT bytes FROM store_usage WHERE name = 'logs'")[0][0]
        assert usage == _bytes(server)
        assert server.query("SELECT sum(log_bytes) FROM jobs")[0][0] == usage
        printed = server.cli("logs", str(first))
        assert "this job's log was removed" in printed
    finally:
        server.stop()
    assert TRACEBACK not in server.process.stderr()  # type: ignore[union-attr]


@pytest.mark.timeout(90)
def test_a_job_whose_runner_is_lost_logs_its_second_attempt_apart(
    processes: Processes, repo: GitRepo
) -> None:
    """An agent killed with -9 mid-step: the lease (2 s) runs out, a second agent takes the
    job, and the step sees CONVEYOR_ATTEMPT=2; the logs show attempt 1 and attempt 2."""
    pipeline = (
        "service: lost\njobs:\n  build:\n    runs_on: [agent]\n    run: |\n"
        '      echo "attempt=$CONVEYOR_ATTEMPT step-attempt=$CONVEYOR_STEP_ATTEMPT"\n'
        '      if [ "$CONVEYOR_ATTEMPT" = 1 ]; then sleep 120; fi\n'
    )
    repo.commit("pipeline", {"conveyor.yml": pipeline})
    server = processes.server(lease_seconds=2)
    server.add_service("lost", repo.path)
    token = server.token("agents", "runner")
    first = processes.agent(server, token, "first", "agent")
    run_id = server.trigger("lost")["id"]
    until(
        lambda: any("attempt=1" in t for t in _job_lines(server, run_id)),
        30,
        "the first attempt's step to start",
    )
    first.kill9()
    processes.agent(server, token, "second", "agent")
    final = server.wait_run(run_id, 40)
    assert final["status"] == "succeeded", final
    assert final["jobs"][0]["attempt"] == 2
    lines = server.logs(run_id)
    said = {line["text"]: line["attempt"] for line in lines if "step-attempt=" in line["text"]}
    assert said == {"attempt=1 step-attempt=1": 1, "attempt=2 step-attempt=1": 2}
    assert len(server.events(run_id, "taskrun.requeued")) == 1
    assert "(attempt 2)" in server.cli("show", str(run_id))
    # The CLI shows the attempts apart, each under its own header.
    printed = server.cli("logs", str(run_id)).splitlines()
    one, two = printed.index("--- attempt 1 ---"), printed.index("--- attempt 2 ---")
    assert one < printed.index("attempt=1 step-attempt=1") < two
    assert two < printed.index("attempt=2 step-attempt=1")


def _all_lines(http: httpx.Client, run_id: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        page = http.get(f"/runs/{run_id}/logs", params={"after": after, "limit": 10000}).json()
        lines += page["lines"]
        if not page["lines"]:
            return lines
        after = page["next"]


def _ignore_sigxfsz() -> None:
    # Ignored, SIGXFSZ would kill the server at its first write past the limit set later.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _chatty_pipeline(gate: Path) -> str:
    # A step that logs steadily (about 4,000 lines a second) until the gate file appears.
    script = (
        f"i=0; while [ ! -e {gate} ]; do j=0; "
        f'while [ $j -lt 200 ]; do echo "{LINE} $i"; i=$((i+1)); j=$((j+1)); done; '
        "sleep 0.05; done; echo finished"
    )
    return f"service: svc\njobs:\n  build:\n    run: '{script}'\n"


@pytest.mark.timeout(90)
def test_a_data_directory_filling_up_during_a_log_heavy_run_corrupts_nothing_and_recovers(
    tmp_path: Path, repo: GitRepo
) -> None:
    """The step's gate is a file outside its workspace: the runner runs it unsandboxed."""
    gate = tmp_path / "gate"
    repo.commit("pipeline", {"conveyor.yml": _chatty_pipeline(gate)})
    server = ServerProcess(tmp_path / "home", runners=1, sandbox=False)
    server.admin = server.token("admin", "admin")
    server.add_service("svc", repo.path)
    db = server.home / "conveyor.db"
    logs = tmp_path / "server.log"
    with logs.open("wb") as out:
        proc = subprocess.Popen(
            conveyor_argv("server", "--port", str(server.port), "--runners", "1"),
            env=server.env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
            preexec_fn=_ignore_sigxfsz,  # noqa: PLW1509 (no threads forked)
        )
    http = httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.admin}"},
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    try:

        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return http.get("/health").status_code == 200
            return False

        until(up, 20, "the server to answer")
        r = http.post("/runs", json={"service": "svc", "rev": "HEAD"})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]

        def logged() -> int:
            return len(http.get(f"/runs/{run_id}/logs", params={"limit": 10000}).json()["lines"])

        until(lambda: logged() > 1000, 20, "the step to log")

        # The disk fills: the database and its log may not grow past a little more room.
        wal = db.with_name("conveyor.db-wal")
        room = max(db.stat().st_size, wal.stat().st_size if wal.exists() else 0) + 256 * 1024
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (room, hard))
        started = time.monotonic()

        def refused() -> httpx.Response | None:
            r = http.post("/runs", json={"service": "svc", "rev": "HEAD"})
            assert r.status_code in (201, 503), r.text
            return r if r.status_code == 503 else None

        answer = until(refused, 20, "new work refused on the full disk")
        full = time.monotonic() - started
        error = answer.json()["error"]
        assert error["code"] == "store_unavailable"
        assert "nothing was recorded" in error["message"]
        assert "free space" in error["hint"]
        # Reads go on while the disk is full: the run, its log, the services.
        assert http.get("/health").status_code == 200
        assert http.get(f"/runs/{run_id}").json()["status"] == "running"
        assert http.get(f"/runs/{run_id}/logs").status_code == 200
        assert [s["name"] for s in http.get("/services").json()] == ["svc"]
        # The refusal above and the runner's next log batch race for the last room: wait until
        # the runner has dropped lines too (it tells the operator), so some are surely lost.
        until(
            lambda: "its log lines are dropped" in logs.read_text(errors="replace"),
            20,
            "the runner to drop log lines on the full disk",
        )

        # Space comes back; the step is let finish. The same process recovers by itself.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        gate.touch()

        def ended(rid: int) -> dict[str, object] | None:
            data: dict[str, object] = http.get(f"/runs/{rid}").json()
            return data if data["status"] in ("succeeded", "failed", "cancelled") else None

        first = until(lambda: ended(run_id), 30, "the log-heavy run to end")
        assert first["status"] == "succeeded", first
        lines = _all_lines(http, run_id)
        lost = [line for line in lines if "log line(s) were lost here" in line["text"]]
        assert lost, "the lost lines were not said"  # said, not silent
        assert lost[0]["step"] == 0  # in the step's own log, where the lines went missing
        assert lines[-1]["text"] == "finished"

        # The next push runs to completion.
        r = http.post("/runs", json={"service": "svc", "rev": "HEAD"})
        assert r.status_code == 201, r.text
        second = until(lambda: ended(r.json()["id"]), 30, "the next run to end")
        assert second["status"] == "succeeded", second
    finally:
        http.close()
        gate.touch()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        server.stop()
    output = logs.read_text(errors="replace")
    assert code in (0, -signal.SIGTERM), output[-3000:]
    assert TRACEBACK not in output, output[-3000:]
    assert "the store cannot be written" in output
    assert integrity(db) == "ok"
    print(f"new work refused {full:.2f}s after the disk filled; store ok")
