"""From accepted changes to runs.

Webhooks and hooks only verify and record a change (`change.received`, a delivery row) and
answer at once; this step, run by the server in the background, turns each recorded change into
a run: fetch the commit, read its pipeline file, apply the branch filter, queue the run. A crash
in between loses nothing: unprocessed deliveries are picked up at the next start.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from conveyor.engine.runs import create_run, ensure_service
from conveyor.engine.states import RunStatus, check_transition
from conveyor.errors import ConveyorError
from conveyor.runner.workspace import resolve_commit
from conveyor.sources.commits import load_pipeline_at, queue_commit
from conveyor.sources.mirror import source_for
from conveyor.spec import PipelineError
from conveyor.store.db import Store, Writer
from conveyor.store.models import Delivery, Run, Service, utcnow

log = logging.getLogger("conveyor.intake")

ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Outcome:
    status: str  # queued | ignored
    reason: str | None = None
    run_id: int | None = None


def record_change(
    w: Writer,
    *,
    source: str,
    delivery_id: str,
    service: str,
    payload: dict[str, Any],
) -> bool:
    """Record an accepted change in the caller's transaction; False if it was seen before."""
    seen = w.session.scalar(
        select(Delivery.id).where(Delivery.source == source, Delivery.delivery_id == delivery_id)
    )
    if seen is not None:
        return False
    w.session.add(
        Delivery(
            source=source,
            delivery_id=delivery_id,
            service=service,
            received_at=utcnow(),
            status="received",
            payload=payload,
        )
    )
    w.emit(
        "change.received",
        service=service,
        source=source,
        delivery=delivery_id,
        ref=payload.get("ref"),
        after=payload.get("after"),
    )
    return True


def branch_matches(branch: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


def process_pending(store: Store, home: Path) -> list[Outcome]:
    """Turn every received change into a run (or a recorded reason why not), oldest first."""
    with store.session() as session:
        pending = session.scalars(
            select(Delivery.id).where(Delivery.status == "received").order_by(Delivery.id)
        ).all()
    return [_process(store, home, delivery_id) for delivery_id in pending]


def _process(store: Store, home: Path, delivery_pk: int) -> Outcome:
    with store.session() as session:
        delivery = session.get_one(Delivery, delivery_pk)
        payload = dict(delivery.payload)
        service = session.scalar(select(Service).where(Service.name == delivery.service))
        repository = service.repository if service else None
        source = delivery.source
    try:
        outcome = _outcome(store, home, delivery.service, repository, payload, source)
    except ConveyorError as exc:
        outcome = Outcome("ignored", exc.message)
    with store.write() as w:
        row = w.session.get_one(Delivery, delivery_pk)
        row.status, row.reason, row.run_id = outcome.status, outcome.reason, outcome.run_id
        w.emit(
            "change.processed",
            service=row.service,
            run_id=outcome.run_id,
            delivery=row.delivery_id,
            status=outcome.status,
            reason=outcome.reason,
        )
    if outcome.status == "ignored":
        log.info("change %s for %s ignored: %s", row.delivery_id, row.service, outcome.reason)
    return outcome


def _outcome(
    store: Store,
    home: Path,
    service: str,
    repository: str | None,
    payload: dict[str, Any],
    source: str,
) -> Outcome:
    if repository is None:
        return Outcome("ignored", f"service {service} is not registered")
    ref, after = str(payload.get("ref", "")), str(payload.get("after", ""))
    if not ref.startswith("refs/heads/"):
        return Outcome("ignored", f"{ref} is not a branch")
    if set(after) == {"0"}:
        return Outcome("ignored", f"{ref} was deleted")
    branch = ref.removeprefix("refs/heads/")
    repo = source_for(home, service, repository)
    commit = resolve_commit(repo, after)
    try:
        pipeline = load_pipeline_at(repo, commit)
    except PipelineError as exc:
        run_id = _record_invalid(store, service, repository, repo, commit.sha, ref, exc)
        return Outcome("queued", "the pipeline file is invalid", run_id)
    push = pipeline.on.push if pipeline.on else None
    if push is not None and not branch_matches(branch, list(push.branches)):
        return Outcome("ignored", f"branch {branch} is not in on.push.branches")
    queued = queue_commit(store, repo, commit.sha, trigger=source, ref=ref, service=service)
    return Outcome("queued", None, queued.run_id)


def _record_invalid(
    store: Store,
    service: str,
    repository: str,
    repo: Path,
    sha: str,
    ref: str,
    error: PipelineError,
) -> int:
    """A push whose pipeline file is broken still shows as a run: failed, naming the lines."""
    commit = resolve_commit(repo, sha)
    run_id = create_run(
        store,
        service=service,
        repository=repository,
        sha=sha,
        ref=ref,
        trigger="push",
        commit={"sha": sha, "subject": commit.subject, "author_name": commit.author_name},
        pipeline={},
        jobs=[],
    )
    with store.write() as w:
        ensure_service(w, service, repository)
        run = w.session.get_one(Run, run_id)
        check_transition("run", RunStatus(run.status), RunStatus.FAILED)
        run.status = RunStatus.FAILED
        run.reason = "the pipeline file is invalid: " + "; ".join(str(p) for p in error.problems)
        run.finished_at = utcnow()
        w.emit(
            "pipelinerun.finished",
            service=service,
            run_id=run_id,
            status=RunStatus.FAILED.value,
            reason=run.reason,
        )
    return run_id
