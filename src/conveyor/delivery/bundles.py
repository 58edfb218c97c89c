"""A release's files on this machine: its commit's tree with its artifacts at their paths.

Prepared once per release under ``CONVEYOR_HOME/releases/<service>/<release id>`` (written to a
temporary folder, then renamed, so a crash never leaves half a release behind) and kept while
an environment serves it or may roll back to it (a rollback must not depend on the repository
or the artifacts still being there), while a deployment of it is under way, and for the newest
``CONVEYOR_KEEP_BUNDLES`` releases of the service (``prune_service``, after every deployment).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from sqlalchemy import select

from conveyor.deploy_states import DeploymentStatus
from conveyor.errors import ConveyorError
from conveyor.git import export_commit
from conveyor.runner.artifacts import ArtifactStore
from conveyor.settings import Settings
from conveyor.sources.mirror import source_for
from conveyor.store.db import Store
from conveyor.store.models import Artifact, Deployment, EnvironmentState, Release, Service
from conveyor.targets.base import ReleaseBundle

# Settings.keep_bundles (CONVEYOR_KEEP_BUNDLES) when unset.
KEEP_DEFAULT = Settings().keep_bundles
# Deployments under way use their bundle (and a rollback the one it restores); queued ones do
# not yet: prepare_bundle exports a pruned bundle again when they start.
_NOT_UNDER_WAY = [
    s.value
    for s in DeploymentStatus
    if s.terminal or s in (DeploymentStatus.QUEUED, DeploymentStatus.AWAITING_APPROVAL)
]
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


def needed_releases(store: Store, service: str, newest: int) -> set[int]:
    """Releases of ``service`` whose bundle must stay: what an environment serves or would roll
    back to, what a deployment under way uses (or would restore), the ``newest``."""
    with store.session() as session:
        service_id = session.scalar(select(Service.id).where(Service.name == service))
        if service_id is None:
            return set()
        keep: set[int | None] = set()
        for current, verified in session.execute(
            select(EnvironmentState.current_release_id, EnvironmentState.verified_release_id).where(
                EnvironmentState.service_id == service_id
            )
        ):
            keep |= {current, verified}
        for release_id, previous in session.execute(
            select(Deployment.release_id, Deployment.previous_release_id).where(
                Deployment.service_id == service_id,
                Deployment.status.not_in(_NOT_UNDER_WAY),
            )
        ):
            keep |= {release_id, previous}
        keep |= set(
            session.scalars(
                select(Release.id)
                .where(Release.service_id == service_id)
                .order_by(Release.id.desc())
                .limit(newest)
            )
        )
    return {r for r in keep if r is not None}


def prune_service(store: Store, service: str, newest: int) -> list[int]:
    """Remove the bundles of ``service`` nothing needs (blocking: run it in a thread); returns
    the release ids removed. Holds the bundle lock, so a bundle being prepared for a deployment
    that started after the needed set was read cannot be removed under it."""
    with _lock:
        keep = needed_releases(store, service, newest)
        base = store.home / "releases" / service
        gone = sorted(
            int(e.name)
            for e in (base.iterdir() if base.is_dir() else ())
            if e.name.isdigit() and int(e.name) not in keep
        )
        prune_bundles(store.home, service, keep)
    return gone
