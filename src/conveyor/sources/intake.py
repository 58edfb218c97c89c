"""From accepted changes to runs.

Webhooks and hooks only verify and record a change (`change.received`, a delivery row) and
answer at once; this step, run by the server in the background, turns each recorded change into
a run: fetch the commit, read its pipeline file, apply the branch filter, queue the run. A crash
in between loses nothing: unprocessed deliveries are picked up at the next start.

Exactly once, with any number of servers on one database (docs/decisions/0012-exactly-once.md):
a delivery is recorded once whoever sends it how often (an insert that does nothing on a
conflict, never a unique-violation 500); a server claims the deliveries it processes with one
conditional UPDATE, so no two servers process the same one; and a run is queued only under the
service's row lock after checking that no run of that push exists, so two deliveries of one
push (a hook and a forge, a retry) make one run even when two servers take them at once.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from conveyor.engine.runs import ensure_service, lock_service
from conveyor.errors import ConveyorError
from conveyor.events import EventType
from conveyor.git import CommitInfo, resolve_commit, run_git
from conveyor.sources.commits import load_pipeline_at, queue_commit
from conveyor.sources.mirror import source_for
from conveyor.spec import Pipeline, PipelineError
from conveyor.states import RunStatus, check_transition
from conveyor.store.db import Store, Writer, db_now
from conveyor.store.models import Delivery, Run, Service, utcnow

log = logging.getLogger("conveyor.intake")

ZERO_SHA = "0" * 40
# A claim older than this belongs to a server that died while processing it: another server
# takes the delivery over. Processing it twice is harmless (the second finds the run made).
CLAIM_SECONDS = 60.0


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
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    now = utcnow()
    for key, change in zip(keys, changes, strict=True):
        if key not in seen and key not in rows:  # the same delivery twice in a batch: once
            rows[key] = dict(change) | {"received_at": now, "status": "received"}
    # Another server (or this one's spool drain) may insert the same delivery between the
    # lookup and the insert: the database decides, and the loser's row is a duplicate.
    inserted = _insert_new(w, list(rows.values())) if rows else set()
    fresh: list[bool] = []
    for key, change in zip(keys, changes, strict=True):
        new = key in inserted
        fresh.append(new)
        if not new:
            continue
        inserted.discard(key)  # the first of a batch's copies is the new one
        payload = change["payload"]
        w.emit(
            EventType.CHANGE_RECEIVED,
            service=change["service"],
            source=change["source"],
            delivery=change["delivery_id"],
            ref=payload.get("ref"),
            after=payload.get("after"),
        )
    return fresh


def _insert_new(w: Writer, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: the (source, delivery id) of rows inserted."""
    dialect = postgresql if w.session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(Delivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
        .returning(Delivery.source, Delivery.delivery_id)
    )
    return {(source, delivery) for source, delivery in w.session.execute(stmt)}


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
    pending = claim_pending(store, batch)
    if not pending:
        return []
    with store.session() as session:
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
                    .where(Delivery.id.in_(ids), Delivery.status == "claimed")
                    .values(status=outcome.status, reason=outcome.reason, run_id=outcome.run_id),
                    execution_options={"synchronize_session": False},
                )
            for row, outcome in results:
                w.emit(
                    EventType.CHANGE_PROCESSED,
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


def _waiting(now: dt.datetime) -> Any:
    """Deliveries no live server is processing: received, or claimed too long ago."""
    stale = now - dt.timedelta(seconds=CLAIM_SECONDS)
    return or_(
        Delivery.status == "received",
        and_(Delivery.status == "claimed", Delivery.claimed_at < stale),
    )


def claim_pending(store: Store, batch: int = 500) -> list[Any]:
    """Take up to `batch` waiting deliveries for this server, oldest first, atomically.

    One write transaction selects them (FOR UPDATE SKIP LOCKED on PostgreSQL, so servers
    claiming at once take different rows; SQLite's writers are serial) and marks them claimed
    with the database's clock, in an UPDATE that re-checks they are still waiting."""
    with store.session() as session:
        # The usual answer is "none": one read, no write transaction.
        if session.scalar(select(Delivery.id).where(_waiting(db_now(session))).limit(1)) is None:
            return []
    with store.write() as w:
        now = db_now(w.session)
        query = select(Delivery.id).where(_waiting(now)).order_by(Delivery.id).limit(batch)
        if w.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(w.session.scalars(query))
        if not ids:
            return []
        claimed = w.session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), _waiting(now))
            .values(status="claimed", claimed_at=now)
            .returning(
                Delivery.id,
                Delivery.delivery_id,
                Delivery.service,
                Delivery.source,
                Delivery.payload,
            ),
            execution_options={"synchronize_session": False},
        ).all()
    return sorted(claimed, key=lambda row: row.id)


def release_claims(store: Store) -> int:
    """At the start of a server on SQLite (one server per database file): claims its earlier
    life left are taken back at once instead of after CLAIM_SECONDS."""
    if store.engine.dialect.name != "sqlite":
        return 0
    with store.write() as w:
        result = w.session.execute(
            update(Delivery)
            .where(Delivery.status == "claimed")
            .values(status="received", claimed_at=None),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class _Past(Exception):
    """Raised inside run creation: the push was already run (found under the service's lock)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


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
    before = str(payload.get("before", ""))

    def guard(w: Writer) -> None:
        # Under the service's row lock, in the transaction that queues the run: of two
        # servers taking two deliveries of this push at once, the second finds the first's run.
        stale = _already_past(w.session, repo, service, ref, before, commit.sha)
        if stale is not None:
            raise _Past(stale)

    if isinstance(pipeline, PipelineError):
        try:
            run_id = _record_invalid(
                store, service, repository, repo, commit.sha, ref, pipeline, guard
            )
        except _Past as past:
            return past.outcome
        return Outcome("queued", "the pipeline file is invalid", run_id)
    push = pipeline.on.push if pipeline.on else None
    if push is not None and not branch_matches(branch, list(push.branches)):
        return Outcome("ignored", f"branch {branch} is not in on.push.branches")
    with store.session() as session:  # the cheap check first; the guard decides
        stale = _already_past(session, repo, service, ref, before, commit.sha)
    if stale is not None:
        return stale
    try:
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
            guard=guard,
        )
    except _Past as past:
        return past.outcome
    if prepare is not None:
        prepare(repo, commit.sha)
    return Outcome("queued", None, queued.run_id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _already_past(
    session: Session, repo: Path, service: str, ref: str, before: str, sha: str
) -> Outcome | None:
    """A push of a commit the branch already ran, or has since moved past, is not run again.

    Forges redeliver with new ids and deliver out of order: running a late push would build
    an older commit after a newer one and deploy it over it. A push whose `before` is the
    branch's last run commit is always a real move (a force-push back included)."""
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
    if run_git(repo, "merge-base", "--is-ancestor", sha, head.sha, check=False).returncode == 0:
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
    guard: Callable[[Writer], None],
) -> int:
    """A push whose pipeline file is broken still shows as a run: failed, naming the lines.
    Queued and rejected in one transaction, so the dispatcher never sees it queued."""
    commit = resolve_commit(repo, sha)
    reason = "the pipeline file is invalid: " + "; ".join(str(p) for p in error.problems)
    with store.write() as w:
        svc = ensure_service(w, service, repository)
        lock_service(w, svc.id)
        guard(w)
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
        w.emit(
            EventType.PIPELINERUN_QUEUED, service=service, run_id=run.id, sha=sha, ref=ref, jobs=[]
        )
        check_transition("run", RunStatus.QUEUED, RunStatus.FAILED)
        run.status, run.reason, run.finished_at = RunStatus.FAILED, reason, now
        w.emit(
            EventType.PIPELINERUN_FINISHED,
            service=service,
            run_id=run.id,
            status=RunStatus.FAILED.value,
            reason=reason,
        )
        return run.id
