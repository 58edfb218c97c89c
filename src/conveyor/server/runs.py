"""Services, runs, logs and artifacts."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from conveyor import __version__, jsonio
from conveyor.aio import wait_for
from conveyor.engine.runs import create_rerun, request_cancel
from conveyor.errors import NotFound
from conveyor.events import EventType
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.schemas import delivery as dschemas
from conveyor.server.schemas import runs as schemas
from conveyor.server.schemas.common import ERRORS, errors, event_stream
from conveyor.server.tokens import Identity
from conveyor.sources.commits import queue_commit
from conveyor.sources.mirror import checked_repository, source_for
from conveyor.states import RunStatus
from conveyor.store.models import Service, utcnow
from conveyor.store.service_removal import remove_service as take_out
from conveyor.store.service_removal import what_removal_takes
from conveyor.store.vault import seal_webhook_secret
from conveyor.views import runs as queries

# ERRORS on each route but GET /health, which needs no credentials and takes no input.
router = APIRouter()
Reader = Annotated[Identity, Depends(require("read"))]
Trigger = Annotated[Identity, Depends(require("trigger"))]
Admin = Annotated[Identity, Depends(require("admin"))]

# Log streams also look for lines written by other server processes this often.
STREAM_POLL_SECONDS = 0.5


# What the routes that show or queue a run answer: the run, as shown on its own.
_ANSWERS_RUN: dict[str, Any] = {
    "tags": ["runs"],
    "response_model": schemas.RunDetail,
    "responses": ERRORS | errors(404),
}


def _state(request: Request) -> Any:
    return request.app.state.conveyor


def _check_run(request: Request, identity: Identity, run_id: int, action: str) -> Any:
    """The store, once the caller may `action` run `run_id` and the run exists (404 if not)."""
    store = _state(request).store
    scoping.check(identity, scoping.of_run(store, run_id), action=action)
    with store.session() as session:
        queries.load_run(session, run_id)
    return store


@router.get("/health", tags=["server"], response_model=schemas.Health)
def health(request: Request) -> dict[str, str]:
    # "off" when the operator chose to run pipeline code unsandboxed: visible to monitoring.
    sandbox = _state(request).sandbox
    # "limits": "job" (a control group per command), "process" or "none": what a runaway job
    # can take from the others.
    return {
        "status": "ok",
        "version": __version__,
        "sandbox": sandbox.mode,
        "limits": sandbox.limit_scope,
    }


class ServiceIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=200)
    repository: str = Field(min_length=1, max_length=2000)
    webhook_secret: str | None = Field(None, min_length=16, max_length=500)
    generate_webhook_secret: bool = False
    allow_unsigned: bool = False
    poll_interval: float | None = Field(None, gt=0)


def _service_dict(svc: Service) -> dict[str, Any]:
    return {
        "name": svc.name,
        "repository": svc.repository,
        "signed_webhooks": svc.webhook_secret is not None,
        "allow_unsigned": svc.allow_unsigned,
        "poll_interval": svc.poll_interval,
        "created_at": svc.created_at,
    }


@router.get(
    "/services", tags=["services"], response_model=list[schemas.ServiceOut], responses=ERRORS
)
def list_services(request: Request, _: Reader) -> list[dict[str, Any]]:
    with _state(request).store.session() as session:
        return [_service_dict(s) for s in session.scalars(select(Service).order_by(Service.name))]


@router.post(
    "/services",
    status_code=201,
    tags=["services"],
    response_model=schemas.ServiceSaved,
    response_model_exclude_unset=True,
    responses=ERRORS,
)
def add_service(request: Request, body: ServiceIn, identity: Admin) -> dict[str, Any]:
    """Register a service, or update its settings. A generated webhook secret is shown once."""
    scoping.check(identity, body.name, action="register")
    repository = checked_repository(body.repository)
    secret = body.webhook_secret
    if body.generate_webhook_secret:
        secret = secrets.token_urlsafe(32)
    store = _state(request).store
    # Sealed before the transaction: making the key file may need to read the store.
    sealed = None if secret is None else seal_webhook_secret(store, secret)
    with store.write() as w:
        svc = w.session.scalar(select(Service).where(Service.name == body.name))
        if svc is None:
            svc = Service(name=body.name, repository=repository, created_at=utcnow())
            w.session.add(svc)
        svc.repository = repository
        if sealed is not None:
            svc.webhook_secret = sealed
        svc.allow_unsigned = body.allow_unsigned
        svc.poll_interval = body.poll_interval
        w.session.flush()
        w.emit(
            EventType.SERVICE_REGISTERED,
            service=svc.name,
            repository=svc.repository,
            by=identity.name,
            poll_interval=svc.poll_interval,
        )
        data = _service_dict(svc)
    # A new secret (or a service that was unknown a moment ago) must count from now on.
    _state(request).forget_service(body.name)
    if body.generate_webhook_secret:
        data["webhook_secret"] = secret
    return data


@router.delete(
    "/services/{name}",
    tags=["services"],
    response_model=schemas.ServiceRemoved,
    responses=errors(400, 401, 403, 404, 422),
)
def remove_service(
    request: Request, name: str, identity: Admin, dry_run: bool = False
) -> dict[str, Any]:
    """Remove a service and what was built from it (runs, logs, artifacts, releases,
    deployments, environments, incidents, secrets); the event log and DORA history stay.
    Refused (400) while a run or deployment of it is in progress; ``dry_run`` only says what
    would go."""
    scoping.check(identity, name, action="remove")
    store = _state(request).store
    if dry_run:
        with store.session() as session:
            removal = what_removal_takes(session, name)
    else:
        removal = take_out(store, name, by=identity.name)
        _state(request).forget_service(name)
    return {
        "service": removal.service,
        "repository": removal.repository,
        "removed": not dry_run,
        **removal.counts(),
        "in_progress": list(removal.in_progress),
    }


class RunIn(BaseModel):
    service: str = Field(max_length=200)
    rev: str = Field("HEAD", min_length=1, max_length=250, pattern=r"^[^\s-][^\s]*$")
    ref: str | None = Field(
        None,
        max_length=1000,
        pattern=r"^refs/[^\x00-\x1f\x7f]+$",
        description="e.g. refs/heads/main",
    )


def run_filter(
    branch: Annotated[
        str | None, Query(max_length=500, description="A branch name, or a whole ref.")
    ] = None,
    author: Annotated[
        str | None, Query(max_length=200, description="Part of the commit author's name.")
    ] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(description="Made (a run queued, a release built) at or after this time."),
    ] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Part of the commit's subject, or a sha prefix."),
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, description="Only older ones than this id: a page's last id.")
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            description="Only newer ones than this id (a page's first id, paging back): the "
            "`limit` just newer than it, still newest first.",
        ),
    ] = None,
) -> queries.RunFilter:
    """The filters GET /runs, GET /releases and GET /deployments share, as query parameters."""
    return queries.RunFilter(
        branch=branch, author=author, since=since, search=q, before=before, after=after
    )


@router.get("/runs", tags=["runs"], response_model=list[schemas.RunSummary], responses=ERRORS)
def list_runs(
    request: Request,
    _: Reader,
    narrow: Annotated[queries.RunFilter, Depends(run_filter)],
    service: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[dict[str, Any]]:
    """The newest runs first. Page with `before` (the last id of the page before), back with
    `after` (the first id of the page after)."""
    return queries.list_runs(
        _state(request).store, service=service, status=status, limit=limit, narrow=narrow
    )


@router.post("/runs", status_code=201, **_ANSWERS_RUN)
def trigger_run(request: Request, body: RunIn, identity: Trigger) -> dict[str, Any]:
    """Queue a run of the service's pipeline for a commit, branch or tag."""
    scoping.check(identity, body.service, action="trigger")
    state = _state(request)
    with state.store.session() as session:
        svc = session.scalar(select(Service).where(Service.name == body.service))
        if svc is None:
            raise NotFound(
                f"there is no service {body.service!r}", hint="`conveyor service add` registers it"
            )
        repository = svc.repository
    repo = source_for(state.store.home, body.service, repository)
    queued = queue_commit(
        state.store,
        repo,
        body.rev,
        trigger=f"api:{identity.name}",
        service=body.service,
        ref=body.ref,
    )
    return queries.run_detail(state.store, queued.run_id)


@router.get("/runs/{run_id}", **_ANSWERS_RUN)
def show_run(request: Request, run_id: int, _: Reader) -> dict[str, Any]:
    return queries.run_detail(_state(request).store, run_id)


@router.post(
    "/runs/{run_id}/cancel",
    tags=["runs"],
    response_model=schemas.RunCancelled,
    responses=ERRORS | errors(404),
)
def cancel_run(request: Request, run_id: int, identity: Trigger) -> dict[str, Any]:
    store = _check_run(request, identity, run_id, "cancel")
    previous = request_cancel(store, run_id, by=identity.name)
    return {"run": run_id, "was": previous.value, "jobs": queries.job_count(store, run_id)}


class RerunIn(BaseModel):
    failed_only: bool = False


@router.post("/runs/{run_id}/rerun", status_code=201, **_ANSWERS_RUN)
def rerun(request: Request, run_id: int, body: RerunIn, identity: Trigger) -> dict[str, Any]:
    """Run the same commit again: every job, or only those that did not succeed (the others
    keep their results and artifacts)."""
    store = _check_run(request, identity, run_id, "rerun")
    new_id = create_rerun(
        store, run_id, failed_only=body.failed_only, trigger=f"rerun:{identity.name}"
    )
    return queries.run_detail(store, new_id)


@router.get(
    "/runs/{run_id}/logs",
    tags=["logs"],
    response_model=schemas.LogPage,
    responses=ERRORS | errors(404),
)
def get_logs(
    request: Request,
    run_id: int,
    _: Reader,
    job: str | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 5000,
) -> Response:
    store = _state(request).store
    jobs = queries.run_jobs(store, run_id, job)
    # Written by the database: a page of 10,000 lines checked line by line against LogPage,
    # or even only encoded here, took longer than reading it (issue 16). The OpenAPI contract
    # test checks real pages against the schema.
    page = queries.log_page_json(store, run_id, jobs, after, limit)
    return Response(page, media_type="application/json")


@router.get(
    "/runs/{run_id}/logs/raw",
    tags=["logs"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The log as text, job after job, each attempt under a line "
            "`==> JOB, attempt N <==`; sent in chunks as it is read.",
        },
        **ERRORS,
        **errors(404),
    },
)
def download_logs(
    request: Request, run_id: int, _: Reader, job: str | None = None
) -> StreamingResponse:
    """The run's log (or one job's) as a text file to download."""
    store = _state(request).store
    jobs = queries.run_jobs(store, run_id, job)
    name = f"run-{run_id}" + (f"-{_FILENAME_UNSAFE.sub('_', job)}" if job else "")
    return StreamingResponse(
        (chunk.encode() for chunk in queries.raw_log(store, jobs)),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.log"'},
    )


# What a file name in Content-Disposition may not hold as it is.
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {jsonio.dumps(data)}\n\n".encode()


@router.get(
    "/runs/{run_id}/logs/stream",
    tags=["logs"],
    response_class=StreamingResponse,
    responses=event_stream(
        "Server-sent events: `line` (a log line, as in GET .../logs), then `end`."
    )
    | ERRORS
    | errors(404),
)
async def stream_logs(
    request: Request,
    run_id: int,
    _: Reader,
    job: str | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """Server-sent events: `line` for each log line as it is written, then `end`."""
    state = _state(request)
    jobs = queries.run_jobs(state.store, run_id, job)

    async def events() -> AsyncIterator[bytes]:
        cursor = after
        with state.hub.listening("logs") as wake:
            while True:
                lines, ended = queries.log_page(
                    state.store, run_id, jobs, cursor, times_as_text=True
                )
                if lines:
                    cursor = lines[-1]["id"]
                    # One chunk per page: a write per line cost more than reading the lines.
                    yield b"".join(_sse("line", line) for line in lines)
                if ended:
                    yield _sse("end", {"run": run_id})
                    return
                if await request.is_disconnected():
                    return
                if not lines:
                    await wait_for(wake, STREAM_POLL_SECONDS)
                else:
                    await asyncio.sleep(0)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/runs/{run_id}/artifacts",
    tags=["artifacts"],
    response_model=list[schemas.Artifact],
    responses=ERRORS | errors(404),
)
def list_artifacts(request: Request, run_id: int, _: Reader) -> list[dict[str, Any]]:
    artifacts: list[dict[str, Any]] = queries.run_detail(_state(request).store, run_id)["artifacts"]
    return artifacts


@router.get(
    "/artifacts/{digest}",
    tags=["artifacts"],
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "The artifact's bytes.",
        },
        **ERRORS,
        **errors(404),
    },
)
def download_artifact(request: Request, digest: str, _: Reader) -> FileResponse:
    store = _state(request).artifacts
    if not digest.startswith("sha256:") or not store.exists(digest):
        raise NotFound(f"there is no artifact {digest}")
    return FileResponse(store.path_for(digest), media_type="application/octet-stream")


@router.get(
    "/releases", tags=["releases"], response_model=list[schemas.ReleaseSummary], responses=ERRORS
)
def list_releases(
    request: Request,
    _: Reader,
    narrow: Annotated[queries.RunFilter, Depends(run_filter)],
    service: Annotated[str | None, Query(max_length=200)] = None,
    environment: Annotated[
        str | None,
        Query(max_length=200, description="Only releases that served users in it."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[dict[str, Any]]:
    """The newest releases first. Page with `before` (the last id of the page before), back
    with `after` (the first id of the page after)."""
    return queries.list_releases(
        _state(request).store,
        service=service,
        limit=limit,
        narrow=narrow,
        environment=environment,
    )


@router.get(
    "/releases/{release_id}",
    tags=["releases"],
    response_model=dschemas.ReleaseDetail,
    responses=ERRORS | errors(404),
)
def show_release(request: Request, release_id: int, _: Reader) -> dict[str, Any]:
    return queries.release_detail(_state(request).store, release_id)
