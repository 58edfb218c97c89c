"""Where the edge of a data directory keeps its files, and the wire format of its socket.

Everything lives in ``<home>/edge/`` (0700): ``routes.json`` (what each stable port forwards to;
written before a change is applied or announced, so a restarted edge serves exactly what the
server was last told), ``edge.pid``, ``edge.lock`` (held while an edge runs: one per data
directory) and ``edge.log``. The control socket is ``edge.sock`` there (0600), unless that path
is too long for a Unix socket; then it lives in a 0700 folder of this user under the temporary
directory, named after the data directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PROTOCOL", "EdgePaths", "decode", "encode"]

# Bumped when a request or reply changes incompatibly; `status` shows it, so an upgraded server
# talking to an older edge can tell (the edge is not restarted by an upgrade of the server).
PROTOCOL = 1
# sun_path holds 108 bytes with its terminating NUL on Linux; keep a margin.
_SOCKET_PATH_MAX = 100


class _InFolder:
    """A file of the edge's folder: ``EdgePaths(home).pid`` is ``home/edge/edge.pid``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: EdgePaths, owner: type[EdgePaths]) -> Path:
        return paths.folder / self.name


@dataclass(frozen=True)
class EdgePaths:
    home: Path

    routes = _InFolder("routes.json")
    pid = _InFolder("edge.pid")
    lock = _InFolder("edge.lock")
    log = _InFolder("edge.log")

    @property
    def folder(self) -> Path:
        return self.home / "edge"

    @property
    def socket(self) -> Path:
        inside = self.folder / "edge.sock"
        if len(os.fsencode(inside)) <= _SOCKET_PATH_MAX:
            return inside
        digest = hashlib.sha256(os.fsencode(self.home.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"conveyor-{os.getuid()}" / f"edge-{digest}.sock"

    def make(self) -> None:
        """Create the folders, private to this user."""
        for folder in {self.folder, self.socket.parent}:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if folder.stat().st_uid != os.getuid():
                # Another user made it first (the temporary directory is shared): its socket
                # could be anyone's, so it is not used.
                raise PermissionError(f"{folder} belongs to another user")
            folder.chmod(0o700)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a message is a JSON object")
    return value
