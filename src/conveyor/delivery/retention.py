"""Retention: what a pass removes, by the operator's settings (decision 0016). The log store's
own accounting and pruning are in conveyor.store.retention; this part also knows artifact files
and release bundles, which live above the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select

from conveyor.delivery.bundles import needed_releases, prune_service
from conveyor.runner.artifacts import ArtifactStore
from conveyor.sandbox import format_bytes
from conveyor.settings import Settings
from conveyor.store.db import Store, db_now
from conveyor.store.models import Artifact, Release, Run, Service
from conveyor.store.retention import FINISHED, prune_old_logs

__all__ = ["Pruned", "prune", "prune_old_artifacts"]


@dataclass
class Pruned:
    """What one pass of retention removed."""

    log_runs: list[int] = field(default_factory=list)
    log_bytes: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    bundles: dict[str, list[int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = []
        if self.log_runs:
            out.append(
                f"removed the logs of {len(self.log_runs)} run(s), "
                f"{format_bytes(max(self.log_bytes, 0))}"
            )
        if self.artifacts:
            out.append(
                f"removed {self.artifacts} artifact file(s), {format_bytes(self.artifact_bytes)}"
            )
        for service, ids in sorted(self.bundles.items()):
            if ids:
                out.append(f"removed {len(ids)} release bundle(s) of {service}")
        return out or ["nothing to remove"]


def prune_old_artifacts(store: Store, days: float, newest: int) -> tuple[int, int]:
    """Remove the artifact files of runs that finished more than ``days`` ago, except those a
    newer run also made and those of releases an environment serves, may roll back to or is
    deploying, and of the ``newest`` releases of each service. Their records stay (path,
    digest, size): the history keeps what was built."""
    files = ArtifactStore(store.home / "artifacts")
    with store.session() as session:
        cutoff = db_now(session) - dt.timedelta(days=days)
        old = set(
            session.scalars(
                select(Artifact.digest)
                .join(Run, Run.id == Artifact.run_id)
                .where(Run.status.in_(FINISHED), Run.finished_at < cutoff)
            )
        )
        recent = set(
            session.scalars(
                select(Artifact.digest)
                .join(Run, Run.id == Artifact.run_id)
                .where((Run.finished_at >= cutoff) | Run.finished_at.is_(None))
            )
        )
        services = list(session.scalars(select(Service.name)))
    needed_runs: set[int] = set()
    for service in services:
        releases = needed_releases(store, service, newest)
        with store.session() as session:
            needed_runs |= set(
                session.scalars(select(Release.run_id).where(Release.id.in_(sorted(releases))))
            )
    with store.session() as session:
        needed = set(
            session.scalars(select(Artifact.digest).where(Artifact.run_id.in_(sorted(needed_runs))))
        )
    count = size = 0
    for digest in sorted(old - recent - needed):
        path = files.path_for(digest)
        try:
            gone = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        count += 1
        size += gone
    return count, size


def prune(store: Store, settings: Settings) -> Pruned:
    """Apply every retention setting once (blocking: run it in a thread)."""
    done = Pruned()
    newest = settings.keep_bundles
    days = settings.log_retention
    if days is not None:
        done.log_runs, done.log_bytes = prune_old_logs(store, days)
    days = settings.artifact_retention
    if days is not None:
        done.artifacts, done.artifact_bytes = prune_old_artifacts(store, days, newest)
    with store.session() as session:
        services = list(session.scalars(select(Service.name)))
    for service in services:
        done.bundles[service] = prune_service(store, service, newest)
    return done
