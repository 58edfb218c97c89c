"""DORA facts for deployments that ended before facts existed (schema 0006).

Migration 0006 created the fact tables empty: a database upgraded from 0005 or earlier kept its
deployments but DORA saw none of them. ``backfill_facts`` derives the fact of every ended
deployment that has none, exactly as the controller would have written it when the deployment
ended (engine.recording), in the order they ended, so each commit range starts after the
previous successful deployment of its environment. It is idempotent: a deployment with a fact
is never touched again. `conveyor db upgrade` runs it after the migrations; `conveyor db
backfill` runs it alone. See docs/decisions/0013-upgrades-keep-history.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy_states import DeploymentStatus as D
from conveyor.engine.recording import record_deployment_fact
from conveyor.errors import ConveyorError
from conveyor.facts import Change, DeploymentResult
from conveyor.metrics.ranges import commit_range
from conveyor.sources.mirror import is_local, source_for
from conveyor.store.db import Store, Writer
from conveyor.store.models import Deployment, DeploymentFactRow

# Deployments per write transaction: a long history is not one huge transaction.
BATCH = 200

_RESULTS: dict[str, DeploymentResult] = {
    D.SUCCEEDED: "succeeded",
    D.FAILED: "failed",
    D.ROLLED_BACK: "rolled_back",
}


@dataclass
class Backfill:
    """What a backfill did: facts written, and services whose commits could not be read."""

    derived: int = 0
    without_commits: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _missing(session: Session, tried: set[int]) -> list[int]:
    """Ids of ended deployments that have no fact (and were not tried), in finish order."""
    has_fact = select(DeploymentFactRow.id).where(DeploymentFactRow.deployment_id == Deployment.id)
    rows = session.execute(
        select(Deployment.id)
        .where(
            Deployment.status.in_(list(_RESULTS)),
            Deployment.finished_at.is_not(None),
            ~has_fact.exists(),
        )
        .order_by(Deployment.finished_at, Deployment.id)
    ).all()
    return [r[0] for r in rows if r[0] not in tried]


def _previous(session: Session, dep: Deployment) -> str | None:
    """The commit of the environment's last successful deployment that ended before ``dep``:
    what the controller saw as "previous" when ``dep`` ended."""
    assert dep.finished_at is not None
    return session.scalar(
        select(DeploymentFactRow.sha)
        .where(
            DeploymentFactRow.service == dep.service.name,
            DeploymentFactRow.environment == dep.environment,
            DeploymentFactRow.kind == "deploy",
            DeploymentFactRow.result == "succeeded",
            DeploymentFactRow.sha != "",
            DeploymentFactRow.finished_at < dep.finished_at,
        )
        .order_by(DeploymentFactRow.finished_at.desc(), DeploymentFactRow.id.desc())
        .limit(1)
    )


def _repository(home: Path, dep: Deployment) -> Path:
    """The service's commits, without fetching: a repository that is gone raises GitError."""
    service = dep.service
    source = str(dep.release.run.commit.get("source") or service.repository)
    if Path(source).is_dir():
        return Path(source)
    if not is_local(service.repository) and not (home / "mirrors" / f"{service.name}.git").exists():
        raise ConveyorError(f"there is no mirror of {service.repository} on this machine")
    return source_for(home, service.name, service.repository, fetch=False)


def _failed_at(session: Session, dep: Deployment) -> dt.datetime | None:
    """When the failure was detected, for deployments that ended before 0006 recorded it: a
    rollback starts the moment the failure is detected; a failure without one ends then."""
    if dep.status == D.ROLLED_BACK:
        started = session.scalar(
            select(Deployment.started_at)
            .where(Deployment.rollback_of == dep.id)
            .order_by(Deployment.id)
            .limit(1)
        )
        if started is not None:
            return started
    return dep.finished_at


def _derive(w: Writer, home: Path, dep: Deployment, done: Backfill) -> None:
    result = _RESULTS[dep.status]
    changes: list[Change] = []
    if result == "succeeded" and dep.kind != "rollback":
        try:
            changes = commit_range(
                _repository(home, dep), dep.release.sha, _previous(w.session, dep)
            )
        except ConveyorError:
            name = dep.service.name
            done.without_commits[name] = done.without_commits.get(name, 0) + 1
    if result != "succeeded" and dep.failed_at is None:
        dep.failed_at = _failed_at(w.session, dep)
    try:
        record_deployment_fact(w, dep, result, changes)
    except ConveyorError as exc:  # e.g. its release's conveyor.yml cannot be read any more
        done.skipped.append(f"deployment {dep.id} of {dep.service.name}: {exc.message}")
        return
    done.derived += 1


def backfill_facts(store: Store, *, warn: Callable[[str], None] | None = None) -> Backfill:
    """Derive the missing fact of every ended deployment, oldest first; ``warn`` is told about
    each service whose repository is gone (its facts are written without commits)."""
    done = Backfill()
    tried: set[int] = set()
    while True:
        with store.session() as session:
            ids = _missing(session, tried)[:BATCH]
        if not ids:
            break
        with store.write() as w:
            for dep_id in ids:
                dep = w.session.get(Deployment, dep_id)
                assert dep is not None
                _derive(w, store.home, dep, done)
                w.session.flush()
        tried.update(ids)
    if warn is not None:
        for name, count in sorted(done.without_commits.items()):
            warn(
                f"service {name}: its repository cannot be read, so {count} deployment(s) "
                "got facts without commits (no lead time for them)"
            )
        for line in done.skipped:
            warn(f"no DORA fact for {line}")
    return done
