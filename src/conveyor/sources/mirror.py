"""Where the server reads a service's commits: the repository itself when it is a local path,
else a mirror under CONVEYOR_HOME fetched from the service's configured URL (never from a URL
found in a webhook payload)."""

from __future__ import annotations

import re
from pathlib import Path

from conveyor.errors import GitError
from conveyor.git import run_git_clean

FETCH_TIMEOUT = 300


def is_local(repository: str) -> bool:
    return "://" not in repository and not re.match(r"^[\w.-]+@[\w.-]+:", repository)


def _git(*args: str, cwd: Path | None = None) -> None:
    where = ("-C", str(cwd)) if cwd is not None else ()
    result = run_git_clean(*where, *args, timeout=FETCH_TIMEOUT)
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
