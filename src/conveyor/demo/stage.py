"""The demo's stage: its folder, the sample repository, the server process, and taking all of
it down again (the server, then the releases it started, which outlive it by design)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conveyor.errors import ConveyorError, listen_failure
from conveyor.proc import supervised

SAMPLE = Path(__file__).parent / "sample"
SERVICE = "hello"
AUTHOR = ("Sam Sample", "sam@example.com")
# Files that commits 2 and 3 write over the repository: (file in sample/commit-changes, path).
CHANGES: dict[int, list[tuple[str, str]]] = {
    2: [("settings_v2.py", "hello/settings.py")],
    3: [("settings_v3.py", "hello/settings.py"), ("test_settings_v3.py", "tests/test_settings.py")],
}
SERVER_START_SECONDS = 30.0
SERVER_STOP_SECONDS = 15.0
RELEASE_STOP_SECONDS = 5.0


class DemoError(ConveyorError):
    """The demo cannot go on; the message says why and the hint what to do."""


# --- the folder and the port --------------------------------------------------------------------


def prepare_directory(given: Path | None) -> Path:
    """A fresh folder for everything the demo makes: the one given (missing or empty), else a
    new temporary one. A folder with files in it is refused: the demo never mixes with them."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="conveyor-demo-")).resolve()
    path = given.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DemoError(f"{path} is a file, not a folder", hint="give --dir a folder")
    if path.is_dir() and any(path.iterdir()):
        raise DemoError(
            f"{path} is not empty",
            hint="give --dir a new or empty folder (the demo writes a repository and a data "
            "directory there), or leave --dir out for a temporary one",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def choose_port(port: int) -> int:
    """``port`` if nothing listens on it on 127.0.0.1 (0: any free port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            remedy = "pass --port N (--port 0 picks a free one)"
            message, hint = listen_failure(exc, "127.0.0.1", port, remedy)
            raise DemoError(message, hint=hint) from None
        chosen: int = s.getsockname()[1]
        return chosen


# --- the sample repository ----------------------------------------------------------------------


def git_env() -> dict[str, str]:
    """git as Sam, the author of every commit, untouched by the person's own git settings
    (hooks paths, signing, templates)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CONVEYOR_"))}
    env.update(
        GIT_AUTHOR_NAME=AUTHOR[0],
        GIT_AUTHOR_EMAIL=AUTHOR[1],
        GIT_COMMITTER_NAME=AUTHOR[0],
        GIT_COMMITTER_EMAIL=AUTHOR[1],
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=repo,
            env=git_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        raise DemoError(
            "git is not installed", hint="install git, then run the demo again"
        ) from None
    if out.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout.strip()


def create_repository(path: Path, *, slack: bool) -> Path:
    """The sample service in a new git repository (not committed yet)."""
    shutil.copytree(
        SAMPLE / "hello-service", path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    if slack:
        with (path / "conveyor.yml").open("a", encoding="utf-8") as fh:
            fh.write(
                "  # CONVEYOR_SLACK_WEBHOOK was set: the same notices go to Slack.\n"
                '  - slack: { webhook: "${{ secrets.SLACK_WEBHOOK }}" }\n'
                "    on: [approval.requested, deployment.failed, deployment.rolledback,"
                " incident.opened, incident.resolved]\n"
            )
    git(path, "init", "-q", "-b", "main")
    return path


def change_files(repo: Path, commit: int) -> list[str]:
    """Write commit ``commit``'s version of the files it changes; returns their paths."""
    changed = []
    for source, target in CHANGES.get(commit, []):
        (repo / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / "commit-changes" / source, repo / target)
        changed.append(target)
    return changed


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


# --- the server ---------------------------------------------------------------------------------


class Server:
    """`conveyor server` for the demo's data directory, on 127.0.0.1:port, in a session of its
    own: a Ctrl-C in the terminal reaches the demo, which then stops everything in order."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        self.home, self.port, self.log = home, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        # Not the caller's Conveyor settings, except how pipeline code is sandboxed. The
        # sample's jobs and releases run the machine's `python3` (in the sandbox, /usr only).
        own = ("CONVEYOR_SANDBOX", "CONVEYOR_LIMIT_", "CONVEYOR_JOB_PATH")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONVEYOR_") or k.startswith(own)
        }
        env.update(CONVEYOR_HOME=str(self.home), CONVEYOR_BASE_URL=self.url)
        return env

    def start(self) -> None:
        argv = [sys.executable, "-m", "conveyor", "server", "--port", str(self.port)]
        argv += ["--runners", "2", "--log-level", "warning"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=self.home.parent,
                env=self.environment(),
                **supervised(out),
            )
        deadline = time.monotonic() + SERVER_START_SECONDS
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise DemoError(
                        f"the server stopped at once (exit status {self.process.returncode}):"
                        f"\n{self.log_tail()}",
                        hint=f"its log: {self.log}",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/api/v1/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the server did not answer within {SERVER_START_SECONDS:g} s",
                        hint=f"its log: {self.log}",
                    )
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after SERVER_STOP_SECONDS; by pid, never by name."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SERVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Whatever it left in its own session (job steps are in groups of their own).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def stop_releases(home: Path, say: Callable[[str], None]) -> None:
    """Stop every release process the deployments started (the process target keeps them in
    sessions of their own so that they outlive a server restart; the demo ends them). A pid
    counts only with the start time recorded for it, so no unrelated process is touched."""
    from sqlalchemy import select

    from conveyor.proc import kill_process_group, process_alive, process_start_time, terminate_group
    from conveyor.store.db import Settings, open_store
    from conveyor.store.models import Deployment, EnvironmentState

    database = home / "conveyor.db"
    if not database.exists():
        return
    store = open_store(Settings(home=home, database_url=f"sqlite:///{database}"))
    try:
        with store.session() as session:
            states = [dict(d.instance or {}) for d in session.scalars(select(Deployment))]
            states += [dict(e.instance or {}) for e in session.scalars(select(EnvironmentState))]
    finally:
        store.close()
    seen: set[int] = set()
    for state in states:
        pid, started = state.get("pid"), state.get("start_time")
        if not isinstance(pid, int) or pid <= 0 or pid in seen or started is None:
            continue
        seen.add(pid)

        def running(pid: int = pid, started: object = started) -> bool:
            # A zombie is gone too: with its server stopped, nobody may be left to reap it.
            return process_start_time(pid) == started and process_alive(pid)

        if not running():
            continue
        # Not SIGTERM to the leader itself: a sandboxed release's leader is bubblewrap, which
        # lives exactly as long as the release once spared (conveyor.proc).
        terminate_group(pid)
        deadline = time.monotonic() + RELEASE_STOP_SECONDS
        while running() and time.monotonic() < deadline:
            time.sleep(0.02)
        if running():
            kill_process_group(pid, signal.SIGKILL)
        say(f"stopped {state.get('version', 'a release')} (pid {pid})")
