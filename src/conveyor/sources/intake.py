"""From accepted changes to runs.

Webhooks and hooks only verify and record a change (`change.received`, a delivery row) and
answer at once; this step, run by the server in the background, turns each recorded change into
a run: fetch the commit, read its pipeline file, apply the branch filter, queue the run. A crash
in between loses nothing: unprocessed deliveries are picked up at the next start.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from conveyor.engine.runs import ensure_service
from conveyor.engine.states import RunStatus, check_transition
from conveyor.errors import ConveyorError
from conveyor.runner.workspace import CommitInfo, _git, resolve_commit
from conveyor.sources.commits import load_pipeline_at, queue_commit
from conveyor.sources.mirror import source_for
from conveyor.spec import Pipeline, PipelineError
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
    return record_changes(
        w,
        [{"source": source, "delivery_id": delivery_id, "service": service, "payload": payload}],
    )[0]


def record_changes(w: Writer, changes: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Record many changes at once (one lookup, one insert); for each, whether it was new."""
    keys = [(c["source"], c["delivery_id"]) for c in changes]
    seen = {
        (source, delivery)
        for source, delivery in w.session.execute(
            select(Delivery.source, Delivery.delivery_id).where(
                Delivery.delivery_id.in_([d for _, d in keys])
            )
        )
    }
    fresh: list[bool] = []
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for key, change in zip(keys, changes, strict=True):
        fresh.append(key not in seen)
        if key in seen:
            continue
        seen.add(key)  # the same delivery twice in one batch counts once
        rows.append(dict(change) | {"received_at": now, "status": "received"})
        payload = change["payload"]
        w.emit(
            "change.received",
            service=change["service"],
            source=change["source"],
            delivery=change["delivery_id"],
            ref=payload.get("ref"),
            after=payload.get("after"),
        )
    if rows:
        w.session.execute(insert(Delivery), rows)
    return fresh


def branch_matches(branch: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


def process_pending(
    store: Store,
    home: Path,
    batch: int = 500,
    prepare: Callable[[Path, str], object] | None = None,
) -> list[Outcome]:
    """Turn received changes into runs (or recorded reasons why not), oldest first.

    Deliveries announcing the same push (a forge's retry with a new id, a hook and a poll both
    seeing it) make one run: the first queues it, the others are recorded as duplicates.
    `prepare(repo, sha)` is called for each queued commit, so its workspace can be exported
    before a runner asks for it.
    """
    with store.session() as session:
        pending = session.execute(
            select(
                Delivery.id,
                Delivery.delivery_id,
                Delivery.service,
                Delivery.source,
                Delivery.payload,
            )
            .where(Delivery.status == "received")
            .order_by(Delivery.id)
            .limit(batch)
        ).all()
        wanted = {row.service for row in pending}
        repositories: dict[str, str] = {
            name: repository
            for name, repository in session.execute(
                select(Service.name, Service.repository).where(Service.name.in_(wanted))
            )
        }
    outcomes: list[Outcome] = []
    decided: dict[tuple[str, str, str], Outcome] = {}
    results: list[tuple[Any, Outcome]] = []
    for row in pending:
        push = (row.service, str(row.payload.get("ref")), str(row.payload.get("after")))
        if push in decided:
            first = decided[push]
            outcome = Outcome("ignored", "another delivery announced the same push", first.run_id)
        else:
            try:
                outcome = _outcome(
                    store,
                    home,
                    row.service,
                    repositories.get(row.service),
                    row.payload,
                    row.source,
                )
            except ConveyorError as exc:
                outcome = Outcome("ignored", exc.message)
            decided[push] = outcome
        results.append((row, outcome))
        outcomes.append(outcome)
    if results:
        same: dict[Outcome, list[int]] = {}
        for row, outcome in results:
            same.setdefault(outcome, []).append(row.id)
        with store.write() as w:
            for outcome, ids in same.items():
                w.session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(status=outcome.status, reason=outcome.reason, run_id=outcome.run_id),
                    execution_options={"synchronize_session": False},
                )
            for row, outcome in results:
                w.emit(
                    "change.processed",
                    service=row.service,
                    run_id=outcome.run_id,
                    delivery=row.delivery_id,
                    status=outcome.status,
                    reason=outcome.reason,
                )
    for row, outcome in results:
        if outcome.status == "ignored":
            log.info("change %s for %s ignored: %s", row.delivery_id, row.service, outcome.reason)
    return outcomes


def _outcome(
    store: Store,
    home: Path,
    service: str,
    repository: str | None,
    payload: dict[str, Any],
    source: str,
    prepare: Callable[[Path, str], object] | None = None,
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
    commit, pipeline = _read_commit(repo, after)
    if isinstance(pipeline, PipelineError):
        run_id = _record_invalid(store, service, repository, repo, commit.sha, ref, pipeline)
        return Outcome("queued", "the pipeline file is invalid", run_id)
    push = pipeline.on.push if pipeline.on else None
    if push is not None and not branch_matches(branch, list(push.branches)):
        return Outcome("ignored", f"branch {branch} is not in on.push.branches")
    stale = _already_past(store, repo, service, ref, str(payload.get("before", "")), commit.sha)
    if stale is not None:
        return stale
    queued = queue_commit(
        store,
        repo,
        commit.sha,
        trigger=source,
        ref=ref,
        service=service,
        read=(commit, pipeline),
        pusher=_text(payload.get("pusher")),
        pusher_via=_text(payload.get("pusher_via")),
    )
    if prepare is not None:
        prepare(repo, commit.sha)
    return Outcome("queued", None, queued.run_id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _already_past(
    store: Store, repo: Path, service: str, ref: str, before: str, sha: str
) -> Outcome | None:
    """A push of a commit the branch already ran, or has since moved past, is not run again.

    Forges redeliver with new ids and deliver out of order: running a late push would build
    an older commit after a newer one and deploy it over it. A push whose `before` is the
    branch's last run commit is always a real move (a force-push back included)."""
    with store.session() as session:
        head = session.execute(
            select(Run.id, Run.sha)
            .join(Service, Run.service_id == Service.id)
            .where(Service.name == service, Run.ref == ref)
            .order_by(Run.id.desc())
            .limit(1)
        ).first()
    if head is None or before == head.sha:
        return None
    if sha == head.sha:
        return Outcome("ignored", f"{ref} at {sha[:7]} already ran as run {head.id}", head.id)
    if _git(repo, "merge-base", "--is-ancestor", sha, head.sha, check=False).returncode == 0:
        return Outcome(
            "ignored",
            f"a late delivery: {ref} has moved on to {head.sha[:7]} (run {head.id}), "
            f"which contains {sha[:7]}",
        )
    return None


@functools.lru_cache(maxsize=256)
def _read_commit(repo: Path, sha: str) -> tuple[CommitInfo, Pipeline | PipelineError]:
    """A commit and its pipeline file never change: read each once, however many deliveries
    name it (a burst of webhooks for one push, or replays)."""
    commit = resolve_commit(repo, sha)
    try:
        return commit, load_pipeline_at(repo, commit)
    except PipelineError as exc:
        return commit, exc


def _record_invalid(
    store: Store,
    service: str,
    repository: str,
    repo: Path,
    sha: str,
    ref: str,
    error: PipelineError,
) -> int:
    """A push whose pipeline file is broken still shows as a run: failed, naming the lines.
    Queued and rejected in one transaction, so the dispatcher never sees it queued."""
    commit = resolve_commit(repo, sha)
    reason = "the pipeline file is invalid: " + "; ".join(str(p) for p in error.problems)
    with store.write() as w:
        svc = ensure_service(w, service, repository)
        now = utcnow()
        run = Run(
            service_id=svc.id,
            status=RunStatus.QUEUED,
            sha=sha,
            ref=ref,
            trigger="push",
            commit={"sha": sha, "subject": commit.subject, "author_name": commit.author_name},
            pipeline={},
            created_at=now,
            cancel_requested=False,
        )
        w.session.add(run)
        w.session.flush()
        w.emit("pipelinerun.queued", service=service, run_id=run.id, sha=sha, ref=ref, jobs=[])
        check_transition("run", RunStatus.QUEUED, RunStatus.FAILED)
        run.status, run.reason, run.finished_at = RunStatus.FAILED, reason, now
        w.emit(
            "pipelinerun.finished",
            service=service,
            run_id=run.id,
            status=RunStatus.FAILED.value,
            reason=reason,
        )
        return run.id
