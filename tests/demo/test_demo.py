"""`conveyor demo` as a person runs it: a real process that starts a real server, commits to a
real repository and tells the story; afterwards the store, read back through the API of a
server started on the demo's data, must show what the narration said, and nothing the demo
started may still run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.cli.dora import ORDER, SAMPLE, plural, show
from tests.serverproc import Process, clean_env, conveyor_argv, free_port, until

# "  [  12.3s] ✔ smoke tests   passed against ..." (the key is 14 characters wide)
STEP = re.compile(r"^\s+\[\s*[\d.]+s\] (\S) (.{14})(.*)$")
# The story, step by step: (mark, key) of every narrated line, in order.
COMMIT_TO_APPROVAL = [
    ("✔", "commit"),
    ("✔", "run"),
    ("✔", "release"),
    ("✔", "staging"),
    ("✔", "smoke tests"),
    ("✔", "notified"),
    ("◷", "approval"),
    ("•", "self-approval"),
    ("✔", "approved"),
]
STORY = [
    ("✔", "server"),
    *COMMIT_TO_APPROVAL,
    ("✔", "production"),
    ("✔", "notified"),
    *COMMIT_TO_APPROVAL,
    ("✖", "production"),
    ("↺", "rollback"),
    ("⚠", "incident"),
    ("✔", "resolved"),
    ("✔", "notified"),
    *COMMIT_TO_APPROVAL,
    ("✔", "production"),
    ("✔", "notified"),
    ("✔", "staging"),
    ("✔", "production"),
    ("✔", "total"),
]
DEMO_SECONDS = 90


def steps(out: str) -> list[tuple[str, str, str]]:
    found = []
    for line in out.splitlines():
        m = STEP.match(line)
        if m:
            key = re.sub(r" #\d+$", "", m.group(2).strip())
            found.append((m.group(1), key, m.group(3)))
    return found


def leftovers(root: Path) -> list[str]:
    """Processes whose working directory, command line or environment is under ``root``."""
    mine = str(root)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read().decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as fh:
                if fh.read().rpartition(")")[2].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if cwd.startswith(mine) or mine in cmdline or mine in environ:
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def demo(
    tmp_path: Path, *args: str, timeout: float = DEMO_SECONDS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        conveyor_argv("demo", *args),
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ReadServer:
    """`conveyor server` on the demo's data, delivering nothing (so it starts no release)."""

    def __init__(self, home: Path, logs: Path) -> None:
        self.port = free_port()
        self.process = Process(
            conveyor_argv(
                "server",
                "--port",
                str(self.port),
                "--runners",
                "0",
                "--no-deliver",
                "--log-level",
                "warning",
            ),
            clean_env(CONVEYOR_HOME=str(home)),
            logs,
            home.parent,
        )
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert self.process.alive(), self.process.stderr()
                return False

        until(up, 20, "the server on the demo's data")

    def get(self, token: str, path: str, **params: Any) -> Any:
        r = httpx.get(
            f"{self.url}/api/v1{path}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.mark.integration
def test_the_demo_tells_the_whole_story_and_leaves_nothing_running(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    began = time.monotonic()
    out = demo(tmp_path, "--exit", "--fast", "--port", "0", "--dir", str(where))
    took = time.monotonic() - began
    assert out.returncode == 0, out.stdout + out.stderr
    assert took < DEMO_SECONDS
    told = steps(out.stdout)
    assert [(mark, key) for mark, key, _ in told] == STORY, out.stdout
    said = {key: text for _, key, text in told}
    assert "refused" in said["self-approval"]
    assert "self_approval" in said["self-approval"]
    failed = next(text for mark, key, text in told if (mark, key) == ("✖", "production"))
    assert "GET /healthz → 500" in failed
    recovery = re.search(r"recovery time ([\d.]+) s", said["resolved"])
    assert recovery is not None, said["resolved"]
    assert re.search(r"the whole story took [\d.]+ s", said["total"])
    assert leftovers(where) == []

    token = re.search(r"^\s+token\s+(cvy_\S+)$", out.stdout, re.M)
    assert token is not None, out.stdout
    server = ReadServer(where / "home", tmp_path / "logs" / "read-server")
    try:
        get = lambda path, **kw: server.get(token.group(1), path, **kw)  # noqa: E731
        releases = get("/releases", service="hello")
        assert sorted(r["id"] for r in releases) == [1, 2, 3]
        envs = {e["environment"]: e for e in get("/environments", service="hello")}
        assert envs["production"]["release"] == 3
        production = get("/deployments", service="hello", environment="production")
        rollback = [d for d in production if d["kind"] == "rollback"]
        assert [(d["release"], d["status"]) for d in rollback] == [(1, "succeeded")]
        failed_deployment = next(d for d in production if d["release"] == 2)
        assert failed_deployment["status"] == "rolled_back"
        [incident] = get("/incidents", service="hello", status="all")
        assert incident["status"] == "resolved"
        assert incident["deployment"] == failed_deployment["id"]
        assert f"{incident['recovery_seconds']:.1f}" == recovery.group(1)
        inbox = {n["event"] for n in get("/inbox", service="hello")}
        assert {
            "approval.requested",
            "deployment.succeeded",
            "deployment.failed",
            "deployment.rolledback",
            "incident.opened",
            "incident.resolved",
        } <= inbox
        delivered = get("/notifications", service="hello", channel="inbox")
        assert len(delivered) == len(get("/inbox", service="hello"))
        assert {(n["channel"], n["status"]) for n in delivered} == {("inbox", "sent")}
        report = get("/dora", service="hello", since="7d", by="day")
    finally:
        server.process.stop()
    metrics = report["metrics"]
    assert metrics["deployment_frequency"]["sample_size"] == 2
    assert metrics["change_failure_rate"]["value"] == pytest.approx(1 / 3)
    assert metrics["recovery_time"]["sample_size"] == 1
    table = out.stdout[out.stdout.index("DORA ·") :]
    for name in ORDER:
        fig = metrics[name]
        row = next(line for line in table.splitlines() if line.startswith(fig["title"]))
        assert show(name, fig["value"]) in row, (name, row)
        assert plural(fig["sample_size"], SAMPLE[name]) in row, (name, row)
    assert leftovers(where) == []


@pytest.mark.integration
def test_ctrl_c_mid_story_stops_everything(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            conveyor_argv("demo", "--fast", "--port", "0", "--dir", str(where)),
            env=clean_env(),
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        # Mid-story: commit 1's run is under way, its step processes running.
        until(lambda: "✔ commit" in log.read_text(), 60, "the first commit")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "interrupted" in text
    assert "stopped the server" in text
    assert "Traceback" not in text
    assert leftovers(where) == []


def test_a_folder_with_files_in_it_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "taken"
    where.mkdir()
    (where / "notes.txt").write_text("mine")
    out = demo(tmp_path, "--exit", "--fast", "--port", "0", "--dir", str(where), timeout=30)
    assert out.returncode == 1
    assert f"error: {where} is not empty" in out.stderr
    assert "hint:" in out.stderr
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in where.iterdir()) == ["notes.txt"]


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = demo(
            tmp_path, "--exit", "--fast", "--port", str(port), "--dir", str(where), timeout=30
        )
    assert out.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "--port" in out.stderr
    assert not where.exists()
