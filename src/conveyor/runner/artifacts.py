"""Collect a job's artifacts from its workspace and keep them in a content-addressed store.

An artifact is named by the sha256 of its content, so the same file built twice is stored once
and a digest recorded for a release always means exactly those bytes. Files reach their final
name only by rename, so a reader (or a crash) never sees half a file under a digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from conveyor.errors import ConveyorError, NotFound
from conveyor.reports import ArtifactFile

__all__ = [
    "ArtifactFile",
    "ArtifactStore",
    "Manifest",
    "collect_artifacts",
    "file_digest",
    "read_manifest",
    "write_manifest",
]

_CHUNK = 2**20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    files: tuple[ArtifactFile, ...]
    meta: dict[str, str] = field(default_factory=dict)


def file_digest(path: Path) -> tuple[str, int]:
    """``("sha256:<hex>", size)`` of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return f"sha256:{sha.hexdigest()}", size


def _check_pattern(pattern: str) -> None:
    posix = PurePosixPath(pattern.replace("\\", "/"))
    if not pattern.strip():
        raise ConveyorError("an artifacts pattern is empty")
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", pattern):
        raise ConveyorError(
            f"artifacts pattern '{pattern}' is absolute",
            hint="artifact paths are relative to the workspace, e.g. dist/*.whl",
        )
    if ".." in posix.parts:
        raise ConveyorError(
            f"artifacts pattern '{pattern}' contains '..'",
            hint="artifacts must come from inside the workspace",
        )


def _files_under(directory: Path) -> Iterator[Path]:
    # Symlinked directories are not followed: they could lead anywhere, and loop.
    for root, _dirs, names in os.walk(directory):
        for name in names:
            yield Path(root, name)


def collect_artifacts(workspace: Path, patterns: Sequence[str]) -> list[ArtifactFile]:
    """The files matching ``patterns`` (globs relative to ``workspace``, ``**`` for any depth).

    A matched directory stands for every file below it. Raises ConveyorError for a pattern that
    is absolute, contains ``..``, reaches outside the workspace through a symlink, or matches no
    file. The result is sorted by path with each file once.
    """
    root = workspace.resolve()
    found: dict[str, Path] = {}
    for pattern in patterns:
        _check_pattern(pattern)
        matched = 0
        try:
            matches = sorted(workspace.glob(pattern))
        except ValueError as exc:
            raise ConveyorError(f"artifacts pattern '{pattern}' is not valid: {exc}") from exc
        for match in matches:
            candidates = _files_under(match) if match.is_dir() else iter([match])
            for candidate in candidates:
                if not candidate.resolve().is_relative_to(root):
                    raise ConveyorError(
                        f"artifacts pattern '{pattern}' reaches outside the workspace: "
                        f"{candidate.relative_to(workspace).as_posix()} is a link to "
                        f"{candidate.resolve()}"
                    )
                if not candidate.is_file():
                    continue  # sockets, fifos, dangling links: nothing to keep
                found.setdefault(candidate.relative_to(workspace).as_posix(), candidate)
                matched += 1
        if not matched:
            raise ConveyorError(f"artifacts pattern '{pattern}' matched no files")
    result = []
    for rel in sorted(found):
        digest, size = file_digest(found[rel])
        result.append(ArtifactFile(path=rel, digest=digest, size=size))
    return result


def _hex(digest: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise ConveyorError(f"'{digest}' is not an artifact digest (sha256:<64 hex digits>)")
    return match.group(1)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Files kept by digest under ``root/sha256/<2 hex>/<62 hex>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        hexdigest = _hex(digest)
        return self.root / "sha256" / hexdigest[:2] / hexdigest[2:]

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.path_for(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"artifact {digest} is not in the store at {self.root}") from None

    def put(self, file_path: Path) -> str:
        """Store a copy of ``file_path`` and return its digest; storing it again is free."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        # The temporary copy lives under root so the final rename never crosses filesystems.
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        tmp = Path(tmp_name)
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, file_path.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = f"sha256:{sha.hexdigest()}"
            final = self.path_for(digest)
            if final.is_file():
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)  # content-addressed: a stored file must never change
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def store_all(self, workspace: Path, files: Sequence[ArtifactFile]) -> None:
        """Store collected files, refusing any that changed since they were collected."""
        for f in files:
            digest = self.put(workspace / f.path)
            if digest != f.digest:
                raise ConveyorError(
                    f"artifact {f.path} changed while it was being stored "
                    f"(collected as {f.digest}, stored as {digest})",
                    hint="make sure no background process still writes to it",
                )

    def export(self, digest: str, dest: Path) -> None:
        """Copy a stored file to ``dest``, checking its content still matches its digest."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        tmp = Path(tmp_name)
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                while chunk := src.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
            if f"sha256:{sha.hexdigest()}" != digest:
                raise ConveyorError(
                    f"artifact {digest} is corrupt in the store at {self.root}",
                    hint=f"delete {self.path_for(digest)} and re-run the job that built it",
                )
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_manifest(path: Path, files: Sequence[ArtifactFile], **meta: str) -> None:
    """Write ``{"version": 1, **meta, "files": [...]}`` atomically."""
    reserved = {"version", "files"} & meta.keys()
    if reserved:
        raise ValueError(f"manifest metadata may not be named {sorted(reserved)}")
    document: dict[str, Any] = {"version": MANIFEST_VERSION, **meta}
    document["files"] = [{"path": f.path, "digest": f.digest, "size": f.size} for f in files]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def read_manifest(path: Path) -> Manifest:
    """Read a manifest written by ``write_manifest``; ConveyorError if it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"artifact manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConveyorError(f"cannot read artifact manifest {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise ConveyorError(f"{path} is not a version {MANIFEST_VERSION} artifact manifest")
    try:
        files = tuple(
            ArtifactFile(path=str(f["path"]), digest=str(f["digest"]), size=int(f["size"]))
            for f in document["files"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConveyorError(f"artifact manifest {path} has a malformed file entry") from exc
    for f in files:
        _hex(f.digest)
    meta = {k: str(v) for k, v in document.items() if k not in ("version", "files")}
    return Manifest(files=files, meta=meta)
