"""Changes coming in: git hooks on this machine, and push webhooks from forges.

Both only verify and record the change (persist first), answer at once, and leave turning it
into a run to the intake loop. Nothing from a request body reaches a shell: branch names,
messages and author names are data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from conveyor.server.auth import require
from conveyor.server.tokens import Identity
from conveyor.sources.intake import record_change
from conveyor.store.models import Service

router = APIRouter(tags=["hooks"])
log = logging.getLogger("conveyor.hooks")
Trigger = Annotated[Identity, Depends(require("trigger"))]
SHA = r"^[0-9a-f]{40}([0-9a-f]{24})?$"


def _state(request: Request) -> Any:
    return request.app.state.conveyor


def _accepted(source: str, service: str, delivery: str, new: bool) -> JSONResponse:
    """202 for a new change. A replayed forge delivery is refused with 409 and a JSON error
    (nothing is stored); the git hook's own retries get 200 "duplicate", which tells it that
    its spooled change has arrived."""
    if new:
        return JSONResponse({"status": "accepted", "delivery": delivery}, status_code=202)
    log.warning("%s delivery %s for %s is a replay; ignored", source, delivery, service)
    if source == "git":
        return JSONResponse({"status": "duplicate", "delivery": delivery}, status_code=200)
    body = {
        "error": {"code": "duplicate_delivery", "message": f"delivery {delivery} was seen before"},
        "delivery": delivery,
    }
    return JSONResponse(body, status_code=409)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes (declared or read):
    a webhook sender must not make the server hold more than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"payload larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"payload larger than {limit} bytes")
    return bytes(body)


class GitPush(BaseModel):
    # A path cannot hold a NUL byte (resolving one raises); refused as bad input.
    repository: str = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")
    ref: str = Field(pattern=r"^refs/[^\x00-\x1f\x7f]+$", max_length=1000)
    before: str = Field(pattern=SHA)
    after: str = Field(pattern=SHA)
    delivery: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    pusher: str | None = Field(None, max_length=200)


@router.post("/hooks/git", status_code=202)
def git_hook(request: Request, body: GitPush, identity: Trigger) -> JSONResponse:
    """A push to a repository on this machine, from `conveyor hook install`'s hook."""
    state = _state(request)
    wanted = {body.repository, str(Path(body.repository).resolve())}
    with state.store.session() as session:
        services = session.scalars(select(Service).where(Service.repository.in_(wanted))).all()
    if not services:
        log.warning("git hook for unknown repository %s refused", body.repository)
        raise HTTPException(404, f"no service is registered for repository {body.repository}")
    delivery = (
        body.delivery
        or hashlib.sha256(
            f"{body.repository}\0{body.ref}\0{body.before}\0{body.after}".encode()
        ).hexdigest()[:32]
    )
    payload = body.model_dump(exclude={"delivery"}) | {"pusher": body.pusher or identity.user}
    new = False
    with state.store.write() as w:
        for svc in services:
            new = (
                record_change(
                    w,
                    source="git",
                    delivery_id=f"{svc.name}:{delivery}",
                    service=svc.name,
                    payload=payload,
                )
                or new
            )
    return _accepted("git", ",".join(s.name for s in services), delivery, new)


@router.post("/hooks/{forge}/{service}", status_code=202)
async def forge_hook(request: Request, forge: str, service: str) -> JSONResponse:
    """A push webhook from GitHub, GitLab or Gitea/Forgejo, signed with the service's secret."""
    from conveyor.sources.forges import WebhookRejected, verify_and_parse

    state = _state(request)
    limit = state.config.webhook_max_bytes
    try:
        body = await read_body(request, limit)
    except HTTPException:
        log.warning("%s webhook for %s refused: body over %s bytes", forge, service, limit)
        raise
    svc = state.service(service)
    if svc is None:
        log.warning("%s webhook for unknown service %s refused", forge, service)
        raise HTTPException(404, f"there is no service {service!r}")
    try:
        push = verify_and_parse(
            forge,
            dict(request.headers),
            body,
            secret=svc["secret"],
            allow_unsigned=svc["allow_unsigned"],
            max_bytes=limit,
        )
    except WebhookRejected as exc:
        log.warning("%s webhook for %s refused (%d): %s", forge, service, exc.status, exc.message)
        raise HTTPException(exc.status, exc.message) from None
    if push is None:
        return JSONResponse({"status": "ignored", "reason": "not a push event"}, status_code=202)
    delivery = push.delivery_id or hashlib.sha256(body).hexdigest()[:32]
    payload = {
        "ref": push.ref,
        "before": push.before,
        "after": push.after,
        "pusher": push.pusher,
        "repository": push.repository,
        "commits": [c.sha for c in push.commits][:100],
    }
    new = await state.changes.record(
        source=forge, delivery_id=delivery, service=service, payload=payload
    )
    return _accepted(forge, service, delivery, new)
