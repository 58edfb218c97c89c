"""Where the server reads a service's commits: the repository itself when it is a local path,
else a mirror under CONVEYOR_HOME fetched from the service's configured URL (never from a URL
found in a webhook payload)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conveyor.errors import GitError

FETCH_TIMEOUT = 300


def is_local(repository: str) -> bool:
    return "://" not in repository and not re.match(r"^[\w.-]+@[\w.-]+:", repository)


def _git(*args: str, cwd: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=FETCH_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")


def source_for(home: Path, service: str, repository: str, *, fetch: bool = True) -> Path:
    """A local git directory holding the service's commits, fetched now if it is a mirror."""
    if is_local(repository):
        path = Path(repository)
        if not path.exists():
            raise GitError(f"the repository of service {service} is gone: {repository}")
        return path
    mirror = home / "mirrors" / f"{service}.git"
    if not mirror.exists():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", "--mirror", "--quiet", "--", repository, str(mirror))
    elif fetch:
        _git("fetch", "--prune", "--quiet", "origin", cwd=mirror)
    return mirror
