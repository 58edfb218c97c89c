"""Real `conveyor server` and `conveyor runner` processes for tests: each server has its own
data directory and a free port on 127.0.0.1; every process is stopped by its PID.

Nothing here sleeps to synchronise: waits poll a condition until a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import GIT_ENV

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}
START_SECONDS = 20.0
# Pipeline code runs sandboxed (conveyor.sandbox): a step sees its workspace and the system's
# folders, nothing else. A test whose steps wait for a file it creates elsewhere (a gate) runs
# its runners with the sandbox off, and says so; tests/security shows the sandbox itself.
UNSANDBOXED = {"CONVEYOR_SANDBOX": "off"}


def until(predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without CONVEYOR_* (nor make's variables), plus `extra`."""
    skip = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_") and k not in skip}
    env.update(GIT_ENV)
    env.update(extra)
    return env


def conveyor_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "conveyor", *args]


class Process:
    """A child process whose output goes to files (a pipe could fill up and block it)."""

    def __init__(self, argv: list[str], env: dict[str, str], logs: Path, cwd: Path) -> None:
        logs.parent.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs.with_suffix(".out")
        self.stderr_path = logs.with_suffix(".err")
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill9(self) -> None:
        """kill -9, by PID, and reap it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM by PID; SIGKILL if it has not exited within `timeout`. Returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)


# Data directories of the servers made by the current test: a server with deliveries starts an
# edge that outlives it by design (decision 0014), so conftest stops their edges after each test,
# whichever way the test ended its server.
HOMES: list[Path] = []


def stop_edges() -> None:
    from conveyor.edge.client import stop_edge

    while HOMES:
        stop_edge(HOMES.pop())


class ServerProcess:
    """`conveyor server` on 127.0.0.1:<free port> (no built-in runner unless asked), own home."""

    def __init__(
        self,
        home: Path,
        *,
        lease_seconds: float | None = None,
        runners: int = 0,
        sandbox: bool = True,
    ) -> None:
        self.home = home
        HOMES.append(home)
        self.runners = runners
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = {"CONVEYOR_HOME": str(home)}
        if lease_seconds is not None:
            extra["CONVEYOR_LEASE_SECONDS"] = str(lease_seconds)
        if not sandbox:
            extra.update(UNSANDBOXED)
        self.env = clean_env(**extra)
        self.process: Process | None = None
        self.starts = 0
        self.admin = ""
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=10)

    # --- the CLI against this server's data directory ------------------------------------------

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            conveyor_argv(*args),
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    def token(self, name: str, scope: str) -> str:
        return self.cli("token", "create", name, "--scope", scope).splitlines()[0]

    def add_service(self, name: str, repo: Path) -> None:
        self.cli("service", "add", name, "--repo", str(repo))

    # --- the process ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait (bounded) until /api/v1/health answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.process = Process(
            conveyor_argv(
                "server",
                "--port",
                str(self.port),
                "--runners",
                str(self.runners),
                "--log-level",
                "warning",
            ),
            self.env,
            self.home.parent / "logs" / f"server-{self.starts}",
            self.home.parent,
        )
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.process.alive():
                raise AssertionError(f"the server exited:\n{self.process.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer within {START_SECONDS:g}s")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill9()

    def stop(self) -> None:
        """Stop the server, then the edge it started (which outlives it by design)."""
        from conveyor.edge.client import stop_edge

        if self.process is not None:
            self.process.stop()
        stop_edge(self.home)
        self.http.close()

    # --- the API -------------------------------------------------------------------------------

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return self.http.request(method, path, headers=headers, **kw)

    def trigger(self, service: str, rev: str = "HEAD") -> dict[str, Any]:
        r = self.api("POST", "/runs", json={"service": service, "rev": rev})
        assert r.status_code == 201, r.text
        run: dict[str, Any] = r.json()
        return run

    def run(self, run_id: int) -> dict[str, Any]:
        r = self.api("GET", f"/runs/{run_id}")
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        return run

    def job(self, run_id: int, name: str) -> dict[str, Any]:
        job: dict[str, Any] = next(j for j in self.run(run_id)["jobs"] if j["name"] == name)
        return job

    def wait_run(self, run_id: int, timeout: float = 20.0) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal seen
            seen = self.run(run_id)
            return seen["status"] in TERMINAL

        try:
            until(ended, timeout, f"run {run_id} to end")
        except AssertionError as exc:
            jobs = {j["name"]: (j["status"], j["runner"]) for j in seen.get("jobs", [])}
            raise AssertionError(f"{exc}; last seen: {seen.get('status')} {jobs}") from None
        return seen

    def logs(self, run_id: int, job: str | None = None) -> list[dict[str, Any]]:
        params = {"job": job} if job else {}
        r = self.api("GET", f"/runs/{run_id}/logs", params=params)
        assert r.status_code == 200, r.text
        lines: list[dict[str, Any]] = r.json()["lines"]
        return lines

    # --- the store, read directly (read-only) to check what was recorded ----------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.home / 'conveyor.db'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def events(self, run_id: int, type_: str | None = None) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT type, job_id, data FROM events WHERE run_id = ? ORDER BY id", run_id
        )
        return [
            {"type": t, "job_id": j, **json.loads(d or "{}")}
            for t, j, d in rows
            if type_ is None or t == type_
        ]


class AgentProcess(Process):
    """`conveyor runner` pointed at a server."""

    def __init__(
        self,
        server: ServerProcess,
        token: str,
        name: str,
        labels: str = "",
        *,
        slots: int = 1,
        work_dir: Path | None = None,
        sandbox: bool = True,
    ) -> None:
        self.name = name
        self.work_dir = work_dir or server.home.parent / "agents" / name
        super().__init__(
            conveyor_argv(
                "runner",
                "--name",
                name,
                "--labels",
                labels,
                "--slots",
                str(slots),
                "--work-dir",
                str(self.work_dir),
            ),
            # The server and token come from the environment, as on a runner machine.
            clean_env(
                CONVEYOR_URL=server.url,
                CONVEYOR_TOKEN=token,
                **({} if sandbox else UNSANDBOXED),
            ),
            server.home.parent / "logs" / f"agent-{name}",
            server.home.parent,
        )


class Processes:
    """What a test started; whatever is still running at the end is stopped."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[ServerProcess] = []
        self.agents: list[AgentProcess] = []

    def server(self, *, lease_seconds: float | None = None, sandbox: bool = True) -> ServerProcess:
        """A started server with an admin token (`server.admin`)."""
        server = ServerProcess(self.tmp_path / "home", lease_seconds=lease_seconds, sandbox=sandbox)
        self.servers.append(server)
        server.admin = server.token("admin", "admin")
        server.start()
        return server

    def agent(
        self, server: ServerProcess, token: str, name: str, labels: str = "", **kw: Any
    ) -> AgentProcess:
        agent = AgentProcess(server, token, name, labels, **kw)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            if agent.alive():
                agent.kill9()
        for server in self.servers:
            if server.process is not None and server.process.alive():
                server.process.kill9()
            server.http.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
