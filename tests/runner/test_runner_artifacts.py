"""Artifacts: collecting by glob, the content-addressed store, and manifests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConveyorError, NotFound
from conveyor.runner.artifacts import (
    ArtifactFile,
    ArtifactStore,
    Manifest,
    collect_artifacts,
    file_digest,
    read_manifest,
    write_manifest,
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    files = {
        "dist/app-1.0.whl": b"wheel",
        "dist/app-1.0.tar.gz": b"sdist",
        "reports/junit.xml": b"<testsuite/>",
        "reports/coverage/index.html": b"<html/>",
        "reports/coverage/deep/a.css": b"css",
        "build.log": b"log",
        ".hidden/secret.txt": b"dot",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def paths(files: list[ArtifactFile]) -> list[str]:
    return [f.path for f in files]


# --- collect_artifacts ----------------------------------------------------------------------


def test_simple_glob(ws: Path) -> None:
    files = collect_artifacts(ws, ["dist/*.whl"])
    assert files == [ArtifactFile(path="dist/app-1.0.whl", digest=sha(b"wheel"), size=5)]


def test_recursive_glob(ws: Path) -> None:
    assert paths(collect_artifacts(ws, ["reports/**/*.html", "**/*.css"])) == [
        "reports/coverage/deep/a.css",
        "reports/coverage/index.html",
    ]


def test_directory_match_expands_to_its_files(ws: Path) -> None:
    assert paths(collect_artifacts(ws, ["reports"])) == [
        "reports/coverage/deep/a.css",
        "reports/coverage/index.html",
        "reports/junit.xml",
    ]
    assert paths(collect_artifacts(ws, ["reports/"])) == paths(collect_artifacts(ws, ["reports"]))


def test_results_are_sorted_and_deduplicated(ws: Path) -> None:
    files = collect_artifacts(ws, ["dist/*", "dist/app-1.0.whl", "dist"])
    assert paths(files) == ["dist/app-1.0.tar.gz", "dist/app-1.0.whl"]


def test_digest_and_size_match_hashlib(ws: Path) -> None:
    big = os.urandom(3 * 2**20 + 17)  # crosses the 1 MiB read boundary
    (ws / "dist" / "big.bin").write_bytes(big)
    (artifact,) = collect_artifacts(ws, ["dist/big.bin"])
    assert artifact.digest == sha(big)
    assert artifact.size == len(big)
    assert file_digest(ws / "dist" / "big.bin") == (sha(big), len(big))


def test_pattern_matching_nothing_is_an_error(ws: Path) -> None:
    with pytest.raises(ConveyorError, match=r"artifacts pattern 'dist/\*\.jar' matched no files"):
        collect_artifacts(ws, ["dist/*.whl", "dist/*.jar"])


def test_empty_directory_matches_no_files(ws: Path) -> None:
    (ws / "empty").mkdir()
    with pytest.raises(ConveyorError, match="matched no files"):
        collect_artifacts(ws, ["empty"])


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../outside.txt", "dist/../../x", "..", ""])
def test_escaping_patterns_are_refused(ws: Path, pattern: str) -> None:
    (ws.parent / "outside.txt").write_text("not yours")
    with pytest.raises(ConveyorError, match="artifacts pattern"):
        collect_artifacts(ws, [pattern])


def test_symlinked_file_pointing_outside_is_refused(ws: Path) -> None:
    secret = ws.parent / "host-secret"
    secret.write_text("ssh key")
    (ws / "dist" / "innocent.txt").symlink_to(secret)
    with pytest.raises(ConveyorError, match="reaches outside the workspace"):
        collect_artifacts(ws, ["dist/*.txt"])
    with pytest.raises(ConveyorError, match="reaches outside the workspace"):
        collect_artifacts(ws, ["dist"])


def test_symlinked_directory_pointing_outside_is_refused(ws: Path) -> None:
    outside = ws.parent / "elsewhere"
    outside.mkdir()
    (outside / "loot.txt").write_text("x")
    (ws / "out").symlink_to(outside)
    with pytest.raises(ConveyorError, match="reaches outside the workspace"):
        collect_artifacts(ws, ["out/*.txt"])
    with pytest.raises(ConveyorError, match="reaches outside the workspace"):
        collect_artifacts(ws, ["out"])


def test_symlink_inside_the_workspace_is_collected_by_its_own_path(ws: Path) -> None:
    (ws / "latest.whl").symlink_to("dist/app-1.0.whl")
    assert collect_artifacts(ws, ["latest.whl"]) == [
        ArtifactFile(path="latest.whl", digest=sha(b"wheel"), size=5)
    ]


def test_hidden_files_are_matched_by_explicit_patterns(ws: Path) -> None:
    assert paths(collect_artifacts(ws, [".hidden/*"])) == [".hidden/secret.txt"]


# --- ArtifactStore --------------------------------------------------------------------------


def test_put_stores_by_digest_and_open_returns_the_bytes(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(ws / "dist" / "app-1.0.whl")
    assert digest == sha(b"wheel")
    hexdigest = digest.removeprefix("sha256:")
    assert store.path_for(digest) == tmp_path / "store" / "sha256" / hexdigest[:2] / hexdigest[2:]
    assert store.exists(digest)
    with store.open(digest) as f:
        assert f.read() == b"wheel"


def test_same_content_is_stored_once(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    (ws / "copy.whl").write_bytes(b"wheel")
    first = store.put(ws / "dist" / "app-1.0.whl")
    second = store.put(ws / "copy.whl")
    assert first == second
    stored = [p for p in (tmp_path / "store" / "sha256").rglob("*") if p.is_file()]
    assert len(stored) == 1
    assert list((tmp_path / "store" / "tmp").iterdir()) == []  # no leftover temporary files


def test_stored_files_are_read_only(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(ws / "build.log")
    assert store.path_for(digest).stat().st_mode & 0o222 == 0


def test_missing_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = sha(b"never stored")
    assert not store.exists(digest)
    with pytest.raises(NotFound, match="not in the store"):
        store.open(digest)


@pytest.mark.parametrize("bad", ["abc", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64])
def test_malformed_digests_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConveyorError, match="not an artifact digest"):
        ArtifactStore(tmp_path).path_for(bad)


def test_digest_cannot_address_a_path_outside_the_store(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError):
        ArtifactStore(tmp_path).path_for("sha256:../../../../etc/passwd")


def test_store_all_and_export_round_trip(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    files = collect_artifacts(ws, ["dist", "reports/junit.xml"])
    store.store_all(ws, files)
    for f in files:
        dest = tmp_path / "download" / f.path
        store.export(f.digest, dest)
        assert dest.read_bytes() == (ws / f.path).read_bytes()
        assert os.access(dest, os.W_OK)


def test_store_all_refuses_a_file_changed_after_collection(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    files = collect_artifacts(ws, ["build.log"])
    (ws / "build.log").write_bytes(b"rewritten by a background process")
    with pytest.raises(ConveyorError, match="changed while it was being stored"):
        store.store_all(ws, files)


def test_export_detects_corruption_in_the_store(tmp_path: Path, ws: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(ws / "build.log")
    stored = store.path_for(digest)
    stored.chmod(0o644)
    stored.write_bytes(b"bit rot")
    dest = tmp_path / "out" / "build.log"
    with pytest.raises(ConveyorError, match="corrupt"):
        store.export(digest, dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


class FailingReader(io.BufferedReader):
    """Fails like a disk read error once the first chunk has been read."""

    reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        FailingReader.reads += 1
        if FailingReader.reads > 1:
            raise OSError(errno.EIO, "Input/output error")
        return super().read(size)


class FlakyPath(type(Path())):  # type: ignore[misc]
    def open(self, *args: Any, **kwargs: Any) -> Any:
        return FailingReader(io.FileIO(str(self), "rb"))


def test_put_never_exposes_a_partial_file_under_the_final_name(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 2**20))
    source = FlakyPath(tmp_path / "big.bin")
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(OSError, match="Input/output error"):
        store.put(source)
    assert FailingReader.reads == 2  # it did fail halfway, after writing a first chunk
    assert not (tmp_path / "store" / "sha256").exists()
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_readers_see_all_or_nothing_during_concurrent_puts(tmp_path: Path) -> None:
    data = os.urandom(8 * 2**20)
    digest = sha(data)
    store = ArtifactStore(tmp_path / "store")
    sources = []
    for i in range(4):
        src = tmp_path / f"copy{i}.bin"
        src.write_bytes(data)
        sources.append(src)
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        final = store.path_for(digest)
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.append(final.stat().st_size)

    watcher = threading.Thread(target=reader)
    watcher.start()
    threads = [threading.Thread(target=store.put, args=(src,)) for src in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert set(seen) <= {len(data)}
    with store.open(digest) as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest.removeprefix("sha256:")


# --- manifests ------------------------------------------------------------------------------


def test_manifest_round_trip(tmp_path: Path, ws: Path) -> None:
    files = collect_artifacts(ws, ["dist"])
    path = tmp_path / "out" / "manifest.json"
    write_manifest(path, files, run="42", job="build")
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert document["run"] == "42"
    assert document["files"][0] == {
        "path": "dist/app-1.0.tar.gz",
        "digest": sha(b"sdist"),
        "size": 5,
    }
    assert read_manifest(path) == Manifest(files=tuple(files), meta={"run": "42", "job": "build"})


def test_manifest_metadata_cannot_shadow_reserved_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="may not be named"):
        write_manifest(tmp_path / "m.json", [], version="2")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"version": 2, "files": []}',
        '{"version": 1}',
        '{"version": 1, "files": [{"path": "a"}]}',
        '{"version": 1, "files": [{"path": "a", "digest": "md5:1", "size": 1}]}',
    ],
)
def test_malformed_manifests_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(ConveyorError):
        read_manifest(path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_manifest(tmp_path / "nope.json")
