"""Read models shared by the CLI and the HTTP API, so both show the same thing."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from conveyor.errors import NotFound
from conveyor.events import EventType
from conveyor.states import RunStatus
from conveyor.store.db import Store, get_or_not_found
from conveyor.store.models import Artifact, Deployment, Event, Job, LogLine, Release, Run
from conveyor.views.filters import filtered

T = TypeVar("T")


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "service": run.service.name,
        "status": run.status,
        "reason": run.reason,
        "sha": run.sha,
        "ref": run.ref,
        "trigger": run.trigger,
        "subject": run.commit.get("subject"),
        "author": run.commit.get("author_name"),
        "concurrency_group": run.concurrency_group,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": (
            (run.finished_at - run.started_at).total_seconds()
            if run.started_at and run.finished_at
            else None
        ),
    }


@dataclass(frozen=True)
class RunFilter:
    """What a list of runs is narrowed to; a field left empty lets every run through."""

    branch: str | None = None
    author: str | None = None
    since: dt.datetime | None = None
    search: str | None = None
    # Keyset paging: only runs older than this one (the last id of the page before), or
    # newer than this one (the first id of the page after, paging back).
    before: int | None = None
    after: int | None = None

    def conditions(
        self, order: Any = Run.id, made: Any = Run.created_at
    ) -> list[ColumnElement[bool]]:
        """The conditions on Run (joined); `order` is the listed rows' id (`before` pages by
        it, and `after`) and `made` their time (`since`): a release's own, for a list of
        releases."""
        found: list[ColumnElement[bool]] = []
        if self.branch:
            # A branch name, or a whole ref (refs/tags/v1) for anything else.
            ref = self.branch if self.branch.startswith("refs/") else f"refs/heads/{self.branch}"
            found.append(Run.ref == ref)
        if self.author:
            found.append(
                Run.commit["author_name"].as_string().icontains(self.author, autoescape=True)
            )
        if self.since is not None:
            found.append(made >= self.since)
        if self.search:
            subject = Run.commit["subject"].as_string().icontains(self.search, autoescape=True)
            # A sha prefix as people copy it, in either case.
            found.append(or_(subject, Run.sha.startswith(self.search.lower(), autoescape=True)))
        if self.before is not None:
            found.append(order < self.before)
        if self.after is not None:
            found.append(order > self.after)
        return found

    def newest_first(self, session: Session, query: Select[T], order: Any, limit: int) -> list[T]:
        """At most `limit` rows of `query`, newest (highest `order`) first: the newest ones,
        or with `after` the ones just newer than it (the page before, paging back)."""
        if self.after is not None:
            return list(session.scalars(query.order_by(order.asc()).limit(limit)))[::-1]
        return list(session.scalars(query.order_by(order.desc()).limit(limit)))


def list_runs(
    store: Store,
    *,
    service: str | None = None,
    status: str | None = None,
    limit: int = 20,
    narrow: RunFilter = RunFilter(),
) -> list[dict[str, Any]]:
    """The newest runs first (by id: the order they were queued), at most `limit`."""
    with store.session() as session:
        query = filtered(
            select(Run).where(*narrow.conditions()), (Run.status, status), service=service
        )
        return [run_summary(r) for r in narrow.newest_first(session, query, Run.id, limit)]


def load_run(session: Session, run_id: int) -> Run:
    return get_or_not_found(session, Run, run_id, "run", "`conveyor runs` lists the runs")


def load_release(session: Session, release_id: int) -> Release:
    return get_or_not_found(
        session, Release, release_id, "release", "`conveyor releases` lists them"
    )


def _seconds(started: dt.datetime | None, finished: dt.datetime | None) -> float | None:
    return (finished - started).total_seconds() if started and finished else None


def run_detail(store: Store, run_id: int) -> dict[str, Any]:
    with store.session() as session:
        run = load_run(session, run_id)
        data = run_summary(run)
        data["commit"] = {k: v for k, v in run.commit.items() if k != "source"}
        data["jobs"] = [
            {
                "name": job.name,
                "position": job.position,
                "status": job.status,
                "reason": job.reason,
                "needs": job.needs,
                "runner": job.runner,
                # 1, 2...: how many times a runner was given the job (it starts over when its
                # runner is lost); its log lines name their attempt. 0: not run yet.
                "attempt": job.lease_token,
                "log_bytes": job.log_bytes,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
                "duration": _seconds(job.started_at, job.finished_at),
                "steps": [
                    {
                        # Log lines name their step by this position (`step` in the logs API).
                        "position": s.position,
                        "name": s.name,
                        "status": s.status,
                        "exit_code": s.exit_code,
                        "attempts": s.attempts,
                        "reason": s.reason,
                        "started_at": s.started_at,
                        "finished_at": s.finished_at,
                        "duration": _seconds(s.started_at, s.finished_at),
                    }
                    for s in job.steps
                ],
            }
            for job in run.jobs
        ]
        data["release"] = session.scalar(select(Release.id).where(Release.run_id == run.id))
        data["rerun_of"] = _rerun_of(session, run.id)
        names = {job.id: job.name for job in run.jobs}
        data["artifacts"] = [
            {"job": names[a.job_id], "path": a.path, "digest": a.digest, "size": a.size}
            for a in session.scalars(
                select(Artifact).where(Artifact.run_id == run.id).order_by(Artifact.id)
            )
        ]
        return data


def _rerun_of(session: Session, run_id: int) -> int | None:
    """The run this one re-ran, as recorded when it was queued (runs keep no column for it)."""
    data = session.scalar(
        select(Event.data)
        .where(Event.run_id == run_id, Event.type == EventType.PIPELINERUN_QUEUED)
        .order_by(Event.id)
        .limit(1)
    )
    rerun_of = (data or {}).get("rerun_of")
    return rerun_of if isinstance(rerun_of, int) else None


def run_jobs(store: Store, run_id: int, job: str | None = None) -> dict[int, str]:
    """The run's jobs by id (only `job`, if named), with clear errors for unknown names."""
    with store.session() as session:
        run = load_run(session, run_id)
        jobs = {j.id: j.name for j in run.jobs}
    if job is None:
        return jobs
    wanted = {jid: name for jid, name in jobs.items() if name == job}
    if not wanted:
        raise NotFound(
            f"run {run_id} has no job '{job}'", hint=f"its jobs: {', '.join(jobs.values())}"
        )
    return wanted


def log_page(
    store: Store,
    run_id: int,
    job_ids: dict[int, str],
    after: int = 0,
    limit: int = 5000,
    *,
    times_as_text: bool = False,
) -> tuple[list[dict[str, Any]], bool]:
    """Lines after the cursor `after` (a line id), and whether the run has ended. The status
    is read first, so every line written before the run ended is in this page or the next.
    `times_as_text`: each line's `ts` as RFC 3339 text, made by the database (for JSON:
    parsing it into a datetime to format it again took as long as the rest of the page).

    Every statement reads a range of the (job_id, id) index from the cursor on, one job at a
    time, so a page costs the same wherever it is in the log (an IN over the jobs ordered by
    id would sort every line of the run after the cursor, for each page)."""
    with store.session() as session:
        ended = _run_ended(session, run_id)
        last = _page_end(session, list(job_ids), after, limit)
        columns = list(_LINE_COLUMNS)
        if times_as_text:
            columns[3] = _rfc3339(store.engine.dialect.name)
        per_job = []
        for job_id in job_ids:
            query = select(*columns).where(LogLine.job_id == job_id, LogLine.id > after)
            if last is not None:
                query = query.where(LogLine.id <= last)
            # Through the connection: rows as the driver gives them, without the ORM's
            # per-row work (a third of a page's time).
            per_job.append(
                session.connection().execute(query.order_by(LogLine.id).limit(limit)).all()
            )
    if len(per_job) == 1:
        rows = per_job[0]
    else:
        rows = list(itertools.islice(heapq.merge(*per_job, key=lambda row: row[0]), limit))
    # `step` is the position of the step that wrote the line (null: the job's own setup);
    # `attempt` the job's attempt that wrote it (1, 2... when it was leased again; 0: a note
    # left where retention removed the job's log).
    lines = [
        {
            "id": lid,
            "job": job_ids[jid],
            "seq": seq,
            "ts": ts,
            "text": text,
            "step": step,
            "attempt": attempt,
        }
        for lid, jid, seq, ts, text, step, attempt in rows
    ]
    return lines, ended and len(lines) < limit


def log_page_json(
    store: Store, run_id: int, job_ids: dict[int, str], after: int = 0, limit: int = 5000
) -> str:
    """The page `log_page` reads, as the JSON text of GET .../logs ({"lines", "ended",
    "next"}), written by the database: building 10,000 dicts and encoding them took more than
    twice as long as the database's own JSON functions (bench/log_read.py). The same index
    ranges as log_page: every page costs the same wherever it is."""
    dialect = store.engine.dialect.name
    with store.session() as session:
        ended = _run_ended(session, run_id)
        last = _page_end(session, list(job_ids), after, limit)
        query = select(
            LogLine.id,
            case(job_ids, value=LogLine.job_id).label("job"),
            LogLine.seq,
            _rfc3339(dialect).label("ts"),
            LogLine.text,
            LogLine.step_position.label("step"),
            LogLine.attempt,
        ).where(LogLine.job_id.in_(list(job_ids)), LogLine.id > after)
        if last is not None:
            query = query.where(LogLine.id <= last)
        page = query.order_by(LogLine.id).limit(limit).subquery()
        fields = [x for c in page.c for x in (literal(c.name, String), c)]
        lines: ColumnElement[str]
        if dialect == "sqlite":
            # The subquery's order is the order rows reach the aggregate.
            lines = func.json_group_array(func.json_object(*fields), type_=String)
        else:
            # As text: the driver would otherwise hand the json back parsed.
            lines = func.coalesce(
                func.json_agg(aggregate_order_by(func.json_build_object(*fields), page.c.id)),
                literal_column("'[]'::json"),
            ).cast(String)
        text, count, top = (
            session.connection().execute(select(lines, func.count(), func.max(page.c.id))).one()
        )
    more = not ended or count >= limit
    return f'{{"lines": {text}, "ended": {"false" if more else "true"}, "next": {top or after}}}'


# Lines a raw download reads per statement (and sends per chunk).
RAW_PAGE = 10_000


def raw_log(store: Store, job_ids: dict[int, str]) -> Iterator[str]:
    """The log as plain text, job after job, each attempt under a line that names it (jobs of
    a run write at the same time: their lines interleaved would be unreadable as text). One
    chunk per page, each page a range of the (job_id, id) index after the last, so memory
    stays bounded and every page costs the same; only what the text shows is read."""
    for job_id, name in job_ids.items():
        after, attempt = 0, -1
        while True:
            with store.session() as session:
                rows = (
                    session.connection()
                    .execute(
                        select(LogLine.id, LogLine.attempt, LogLine.text)
                        .where(LogLine.job_id == job_id, LogLine.id > after)
                        .order_by(LogLine.id)
                        .limit(RAW_PAGE)
                    )
                    .all()
                )
            chunk = []
            for _, line_attempt, text in rows:
                if line_attempt != attempt:
                    attempt = line_attempt
                    chunk.append(attempt_heading(name, attempt))
                chunk.append(text + "\n")
            if chunk:
                yield "".join(chunk)
            if len(rows) < RAW_PAGE:
                break
            after = rows[-1][0]


def attempt_heading(job: str, attempt: int) -> str:
    if attempt == 0:
        return f"==> {job}: what the store's log ceiling removed <==\n"
    return f"==> {job}, attempt {attempt} <==\n"


_LINE_COLUMNS: tuple[Any, ...] = (
    LogLine.id,
    LogLine.job_id,
    LogLine.seq,
    LogLine.ts,
    LogLine.text,
    LogLine.step_position,
    LogLine.attempt,
)


def _rfc3339(dialect: str) -> ColumnElement[str]:
    """A line's time as RFC 3339 text in UTC, with microseconds."""
    if dialect == "sqlite":
        # Stored as UTC "YYYY-MM-DD HH:MM:SS.ffffff" (store/models.py UTCDateTime).
        return func.replace(LogLine.ts, " ", "T", type_=String) + "Z"
    return func.to_char(
        func.timezone("UTC", LogLine.ts), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', type_=String
    )


def _run_ended(session: Session, run_id: int) -> bool:
    """Read before a page's lines: every line written before the run ended is in this page or
    the next."""
    return RunStatus(session.scalars(select(Run.status).where(Run.id == run_id)).one()).terminal


def _page_end(session: Session, job_ids: list[int], after: int, limit: int) -> int | None:
    """The id of the page's last line when the page takes lines from several jobs (None: one
    job, or fewer than `limit` lines after the cursor), found from the index alone, so that
    only the page's own lines are read whole."""
    if len(job_ids) < 2:
        return None
    ids = heapq.merge(
        *(
            session.scalars(
                select(LogLine.id)
                .where(LogLine.job_id == job_id, LogLine.id > after)
                .order_by(LogLine.id)
                .limit(limit)
            ).all()
            for job_id in job_ids
        )
    )
    return next(itertools.islice(ids, limit - 1, None), None)


def job_count(store: Store, run_id: int) -> int:
    with store.session() as session:
        return len(session.scalars(select(Job.id).where(Job.run_id == run_id)).all())


def release_summary(release: Release) -> dict[str, Any]:
    return {
        "id": release.id,
        "service": release.service.name,
        "run": release.run_id,
        "sha": release.sha,
        "ref": release.ref,
        "subject": release.run.commit.get("subject"),
        "author": release.run.commit.get("author_name"),
        "created_at": release.created_at,
    }


def list_releases(
    store: Store,
    *,
    service: str | None = None,
    limit: int = 20,
    narrow: RunFilter = RunFilter(),
    environment: str | None = None,
) -> list[dict[str, Any]]:
    """The newest releases first, at most `limit`; `narrow` filters by the run that built each
    (since: the release's own time), `environment` keeps those that served users there."""
    with store.session() as session:
        query = filtered(select(Release), service=service)
        query = query.join(Run, Release.run_id == Run.id).where(
            *narrow.conditions(order=Release.id, made=Release.created_at)
        )
        if environment:
            served = select(Deployment.release_id).where(
                Deployment.environment == environment,
                or_(Deployment.served_at.is_not(None), Deployment.status == "succeeded"),
            )
            query = query.where(Release.id.in_(served))
        found = narrow.newest_first(session, query, Release.id, limit)
        return [release_summary(r) for r in found]


def release_detail(store: Store, release_id: int) -> dict[str, Any]:
    with store.session() as session:
        release = load_release(session, release_id)
        data = release_summary(release)
        run_id = release.run_id
        data["commit"] = {k: v for k, v in release.run.commit.items() if k != "source"}
        data["evidence"] = release.evidence
        data["publication"] = release.publication
    data["artifacts"] = run_detail(store, run_id)["artifacts"]
    from conveyor.views.delivery import list_deployments

    data["deployments"] = list_deployments(store, release=release_id, limit=1000)[::-1]
    return data
