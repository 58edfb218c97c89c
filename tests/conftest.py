"""Shared fixtures: real git repositories and the real `conveyor` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import pg

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Author",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass
class GitRepo:
    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(self.path), *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **GIT_ENV, "HOME": str(self.path.parent)},
        )
        return out.stdout.strip()

    def write(self, relpath: str, content: str | bytes, *, executable: bool = False) -> Path:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content), encoding="utf-8")
        if executable:
            target.chmod(0o755)
        return target

    def commit(self, message: str = "change", files: Mapping[str, str] | None = None) -> str:
        for relpath, content in (files or {}).items():
            self.write(relpath, content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    path = tmp_path / "repo"
    path.mkdir()
    r = GitRepo(path)
    r.git("init", "-q", "-b", "main")
    return r


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Conveyor:
    """Runs the real `conveyor` command, as a user would, with its own data directory."""

    home: Path
    cwd: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        # Not CONVEYOR_* of the caller, nor make's variables when the suite runs under `make`.
        skip = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_") and k not in skip
        }
        env.update(GIT_ENV)
        env["CONVEYOR_HOME"] = str(self.home)
        env.update(self.extra_env)
        return env

    def argv(self, *args: str, python: Sequence[str] = ()) -> list[str]:
        """The command line of `conveyor ARGS`; ``python``: options for the interpreter."""
        return [sys.executable, *python, "-m", "conveyor", *args]

    def completed(
        self, *args: str, python: Sequence[str] = (), stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`conveyor ARGS` run to its end, with ``stdin`` on its standard input, as it is."""
        return subprocess.run(
            self.argv(*args, python=python),
            input=stdin,
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def __call__(
        self, *args: str, cwd: Path | None = None, timeout: float = 60, check: bool = False
    ) -> Result:
        proc = subprocess.run(
            self.argv(*args),
            cwd=cwd or self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in result.output, result.output
        if check:
            assert proc.returncode == 0, result.output
        return result

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            cwd=cwd or self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def conveyor(tmp_path: Path, repo: GitRepo) -> Conveyor:
    return Conveyor(home=tmp_path / "home", cwd=repo.path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database for this test: a SQLite file, or a PostgreSQL database of its own
    on the server CONVEYOR_TEST_POSTGRES_URL names (see tests/pg.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conveyor.db'}"
        return
    with pg.fresh_database(pg.admin_url()) as url:
        yield url


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if pg.creation_seconds:
        times = sorted(pg.creation_seconds)
        terminalreporter.write_line(
            f"PostgreSQL: {len(times)} test databases created, "
            f"median {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms each"
        )


@pytest.fixture(autouse=True)
def _edges_are_stopped() -> Iterator[None]:
    """After each test, the edges of the servers it made (decision 0014), stopped by PID."""
    yield
    from tests.serverproc import stop_edges

    stop_edges()
