"""The data directory and the database file are for Conveyor's own user only (0700, 0600).

The database holds token digests, sessions, webhook secrets and every log line; the directory
holds artifacts, workspaces and key files. Both are made private when Conveyor creates them, and
an existing looser one loses its group and other bits at start-up, with a warning: nothing is
ever made more permissive than it was (a read-only directory stays read-only).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("conveyor.store")

# SQLite's companions of a database file; it creates them with the database's own mode.
COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create `path` (parents as the umask says, the directory itself 0700), or take group and
    other permissions off an existing one. OSError if it cannot be created."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_dir():
            raise
        _tighten(path, "data directory")
        return
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    # mkdir's mode passes through the umask; an odd umask must not leave it wider or narrower.
    path.chmod(0o700)


def private_database(path: Path) -> None:
    """Create the SQLite database file empty and 0600 before SQLite does (it would use the
    umask), or tighten it and its -wal/-shm files. Failures are left to SQLite to report."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return  # a read-only or missing directory: opening the database says it better
    else:
        os.close(fd)
    for candidate in (path, *(path.with_name(path.name + c) for c in COMPANIONS)):
        _tighten(candidate, "database file")


def _tighten(path: Path, what: str) -> None:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except OSError:
        return
    if not mode & 0o077 or path.is_symlink():
        return
    try:
        path.chmod(mode & 0o700)
    except OSError as exc:
        log.warning(
            "the %s %s can be read by other users (mode %o) and could not be made private: %s",
            what,
            path,
            mode,
            exc.strerror or exc,
        )
        return
    log.warning(
        "the %s %s was open to other users (mode %o): now %o, for this user only",
        what,
        path,
        mode,
        mode & 0o700,
    )
