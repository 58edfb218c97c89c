"""The runner protocol: agents on other machines long-poll for jobs, report what they do, and
upload artifacts; the server keeps the logs and the record.

A report batch carries the lease's fencing token and a sequence number per report: a report
from a runner whose lease was taken away is refused (409), and one sent twice (a retry after a
lost answer) is acknowledged without being applied again.

A runner token limited to services is leased only their jobs (and may report on, and read the
source of, no others); one limited to labels may claim no other labels.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from conveyor.aio import wait_for
from conveyor.engine.dispatch import lease_next
from conveyor.engine.job_reports import JobRecorder, extend_lease
from conveyor.engine.runs import JobRef, job_ref
from conveyor.errors import NotFound, StaleLease
from conveyor.plan import JobPlan
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.schemas import runners as schemas
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.runs import ArtifactStored
from conveyor.server.tokens import Identity
from conveyor.store.models import Job, Run
from conveyor.store.vault import lease_secrets

router = APIRouter(tags=["runners"], responses=ERRORS)
RunnerAuth = Annotated[Identity, Depends(require("runner"))]


class LeaseIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    labels: list[str] = Field(default_factory=list, max_length=50)
    wait: float = Field(25.0, ge=0, le=60)


def _state(request: Request) -> Any:
    return request.app.state.conveyor


@router.post(
    "/runners/lease",
    response_model=schemas.Lease,
    response_model_exclude_unset=True,
    responses={204: {"description": "no job within `wait`"}},
)
async def lease(request: Request, body: LeaseIn, identity: RunnerAuth) -> Any:
    """Long-poll for a job whose `runs_on` labels this runner has."""
    state = _state(request)
    beyond = sorted(set(body.labels) - identity.labels) if identity.labels else []
    if beyond:
        raise HTTPException(
            403,
            f"token {identity.name} may claim labels {', '.join(sorted(identity.labels))} only, "
            f"not {', '.join(beyond)}",
        )
    runner = f"{body.name} ({identity.name})"
    deadline = time.monotonic() + body.wait
    with state.hub.listening("jobs") as wake:
        while True:
            found = lease_next(
                state.store,
                runner,
                body.labels,
                state.settings.lease_seconds,
                services=identity.services,
            )
            if found is not None:
                # The job's own secrets (what its env references, for its service): the
                # agent resolves nothing itself, so it never reads its own environment.
                plan = JobPlan.model_validate(found.ref.plan)
                secrets = await asyncio.to_thread(
                    lease_secrets, state.store, found.context.service, plan
                )
                return found.as_json() | {"lease_seconds": state.settings.lease_seconds, **secrets}
            remaining = deadline - time.monotonic()
            if remaining <= 0 or await request.is_disconnected():
                return Response(status_code=204)
            await wait_for(wake, min(remaining, 0.5))


class Report(BaseModel):
    seq: int = Field(ge=1)
    kind: str
    model_config = {"extra": "allow"}


class ReportsIn(BaseModel):
    token: int = Field(ge=1)
    reports: list[Report] = Field(max_length=1000)


def _ref(request: Request, job_id: int, identity: Identity) -> JobRef:
    with _state(request).store.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"there is no job {job_id}")
        ref = job_ref(job, job.run.service.name)
    scoping.check(identity, ref.service, action="run jobs of")
    return ref


@router.post(
    "/jobs/{job_id}/reports",
    response_model=schemas.ReportsApplied,
    responses=errors(404, 409),
)
def reports(request: Request, job_id: int, body: ReportsIn, identity: RunnerAuth) -> dict[str, Any]:
    """Apply a runner's reports in order; answers whether the run was asked to cancel."""
    state = _state(request)
    store, settings = state.store, state.settings
    ref = _ref(request, job_id, identity)
    recorder = JobRecorder(store, ref, body.token, settings.lease_seconds, settings.log_store_limit)
    cancel = False
    applied = 0
    with store.write() as w:
        held, last = w.session.execute(
            select(Job.lease_token, Job.report_seq).where(Job.id == job_id)
        ).one()
        if held != body.token:
            raise StaleLease(f"job {ref.name} was leased again (token {held}, yours {body.token})")
        for report in sorted(body.reports, key=lambda r: r.seq):
            if report.seq <= last:
                continue  # already applied: the runner is retrying a report we answered
            try:
                # The fields as sent, not model_dump(): that deep-copies every log line.
                fields = {"seq": report.seq, "kind": report.kind, **(report.model_extra or {})}
                cancel = recorder.apply(w, fields) or cancel
            except (KeyError, ValueError, TypeError) as exc:
                raise HTTPException(
                    400, f"report {report.seq} ({report.kind}) is malformed: {exc}"
                ) from None
            last = report.seq
            applied += 1
        w.session.execute(update(Job).where(Job.id == job_id).values(report_seq=last))
        cancel = cancel or bool(
            w.session.scalar(select(Run.cancel_requested).where(Run.id == ref.run_id))
        )
    return {"applied": applied, "seq": last, "cancel": cancel}


class HeartbeatIn(BaseModel):
    token: int = Field(ge=1)


@router.post(
    "/jobs/{job_id}/heartbeat", response_model=schemas.Heartbeat, responses=errors(404, 409)
)
def heartbeat(
    request: Request, job_id: int, body: HeartbeatIn, identity: RunnerAuth
) -> dict[str, Any]:
    """Keep a lease alive. Apart from the reports on purpose: a heartbeat queued behind a long
    log let the lease expire while the job was still running (answered 409 once not held)."""
    state = _state(request)
    ref = _ref(request, job_id, identity)
    with state.store.write() as w:
        cancel = extend_lease(w, ref, body.token, state.settings.lease_seconds)
    return {"cancel": cancel}


@router.put(
    "/artifacts/{digest}",
    status_code=201,
    response_model=ArtifactStored,
    response_model_exclude_unset=True,
    responses=errors(413),
)
async def upload_artifact(request: Request, digest: str, _: RunnerAuth) -> dict[str, Any]:
    """Store an artifact's bytes under their sha256 (checked against the name)."""
    state = _state(request)
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise HTTPException(400, "artifacts are named sha256:<64 hex digits>")
    if state.artifacts.exists(digest):
        return {"digest": digest, "stored": False}
    hasher = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=state.store.home, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > state.config.body_limits.artifact:
                    raise HTTPException(413, "artifact too large")
                hasher.update(chunk)
                out.write(chunk)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise HTTPException(400, "the uploaded bytes do not match the digest")
        await asyncio.to_thread(state.artifacts.put, Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"digest": digest, "stored": True, "size": size}


@router.get(
    "/runs/{run_id}/source",
    response_class=Response,
    responses={
        200: {
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The commit's tree as a tar archive.",
        },
        **errors(404),
    },
)
async def source(request: Request, run_id: int, identity: RunnerAuth) -> Response:
    """The commit's tree as a tar archive, for runners that have no copy of the repository."""
    state = _state(request)
    with state.store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"there is no run {run_id}")
        scoping.check(identity, run.service.name, action="read the source of")
        repo = Path(run.commit.get("source") or run.service.repository)
        sha = run.sha
    with tempfile.TemporaryDirectory(dir=state.store.home) as tmp:
        tree = Path(tmp) / "tree"
        await state.sources.checkout(repo, sha, tree)
        data = await asyncio.to_thread(_tar, tree)
    return Response(data, media_type="application/x-tar")


def _tar(tree: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(tree.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(tree)), recursive=False)
    return buffer.getvalue()
