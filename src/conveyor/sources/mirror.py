"""Where the server reads a service's commits: the repository itself when it is a local path,
else a mirror under CONVEYOR_HOME fetched from the service's configured URL (never from a URL
found in a webhook payload)."""

from __future__ import annotations

import re
from pathlib import Path

from conveyor.errors import GitError
from conveyor.git import is_repository, run_git_clean

FETCH_TIMEOUT = 300


def is_local(repository: str) -> bool:
    return "://" not in repository and not re.match(r"^[\w.-]+@[\w.-]+:", repository)


def checked_repository(repository: str) -> str:
    """The repository of a service as it is stored: a git URL as given, a local path made
    absolute once it is known to be a git repository (a typo found now, not at the first push)."""
    if not is_local(repository):
        return repository
    path = Path(repository).expanduser().resolve()
    if not path.exists():
        raise GitError(
            f"the repository {repository} does not exist",
            hint="give the path of the service's git repository, or a git URL to mirror",
        )
    if not path.is_dir() or not is_repository(path):
        raise GitError(
            f"{path} is not a git repository",
            hint="give the folder that holds the service's commits (run `git init` there first)",
        )
    return str(path)


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
