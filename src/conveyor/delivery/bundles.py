"""A release's files on this machine: its commit's tree with its artifacts at their paths.

Prepared once per release under ``CONVEYOR_HOME/releases/<service>/<release id>`` (written to a
temporary folder, then renamed, so a crash never leaves half a release behind) and kept while
an environment may roll back to it.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from sqlalchemy import select

from conveyor.errors import ConveyorError
from conveyor.runner.artifacts import ArtifactStore
from conveyor.runner.workspace import export_commit
from conveyor.sources.mirror import source_for
from conveyor.store.db import Store
from conveyor.store.models import Artifact, Release
from conveyor.targets.base import ReleaseBundle

_lock = threading.Lock()


def release_root(home: Path, service: str, release_id: int) -> Path:
    return home / "releases" / service / str(release_id)


def prepare_bundle(store: Store, artifacts: ArtifactStore, release_id: int) -> ReleaseBundle:
    """The release's bundle, exporting it first if needed (blocking: run it in a thread)."""
    with store.session() as session:
        release = session.get(Release, release_id)
        if release is None:
            raise ConveyorError(f"there is no release {release_id}")
        service, sha = release.service.name, release.sha
        repository = release.service.repository
        source = str(release.run.commit.get("source") or repository)
        files = session.execute(
            select(Artifact.path, Artifact.digest).where(Artifact.run_id == release.run_id)
        ).all()
        images = tuple(release.publication.get("images") or ())
    root = release_root(store.home, service, release_id)
    with _lock:
        if not root.is_dir():
            partial = root.with_name(root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            repo = (
                Path(source)
                if Path(source).is_dir()
                else source_for(store.home, service, repository)
            )
            export_commit(repo, sha, partial)
            for path, digest in files:
                dest = partial / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                artifacts.export(digest, dest)
            partial.rename(root)
    return ReleaseBundle(
        release_id=release_id,
        service=service,
        sha=sha,
        root=root,
        artifacts={path: root / path for path, _ in files},
        images=images,
    )


def prune_bundles(home: Path, service: str, keep_ids: set[int]) -> None:
    """Remove release folders no environment may need any more."""
    base = home / "releases" / service
    if not base.is_dir():
        return
    for entry in base.iterdir():
        if entry.name.isdigit() and int(entry.name) not in keep_ids:
            shutil.rmtree(entry, ignore_errors=True)
