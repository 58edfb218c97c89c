"""Changes coming in: git hooks on this machine, and push webhooks from forges.

Both only verify and record the change (persist first), answer at once, and leave turning it
into a run to the intake loop. Nothing from a request body reaches a shell: branch names,
messages and author names are data.

Who pushed is taken from what authenticated the request, never from what it claims: the user
of the hook's token (a body naming someone else is ignored, and the claim kept beside it), or,
for a token of no user (a hook token), the name the body gives, recorded as claimed by that
token; a forge's pusher comes from its signed payload. A forge webhook for a service that does
not exist is refused exactly like one with a wrong signature, so the answer tells nobody which
services exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.intake import HookAnswer, HookChange, HookToken
from conveyor.server.tokens import Identity, create_hook_token
from conveyor.sources.hook import registered_services
from conveyor.sources.intake import record_change
from conveyor.store.models import Delivery, Service

router = APIRouter(tags=["hooks"], responses=ERRORS)
log = logging.getLogger("conveyor.hooks")
Trigger = Annotated[Identity, Depends(require("trigger"))]
Admin = Annotated[Identity, Depends(require("admin"))]
SHA = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
# One answer for every signature failure and for a service that does not exist (the server's
# log says which it was).
UNSIGNED = "the signature is missing or wrong, or there is no such service"
# Checked against when the service does not exist, so that both take the same path and time.
_NO_SECRET = secrets.token_urlsafe(32)


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


async def read_body(request: Request, limit: int, too_large: str | None = None) -> bytes:
    """The raw body, refused with 413 (``too_large`` its message) as soon as it passes ``limit``
    bytes (declared or read): a sender must not make the server hold more than that."""
    message = too_large or f"payload larger than {limit} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, message)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, message)
    return bytes(body)


class GitPush(BaseModel):
    # A path cannot hold a NUL byte (resolving one raises); refused as bad input.
    repository: str = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")
    ref: str = Field(pattern=r"^refs/[^\x00-\x1f\x7f]+$", max_length=1000)
    before: str = Field(pattern=SHA)
    after: str = Field(pattern=SHA)
    delivery: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    pusher: str | None = Field(None, max_length=200)


def _services_of(request: Request, repository: str, identity: Identity) -> list[Service]:
    """The services built from a repository on this machine that ``identity`` may trigger."""
    with _state(request).store.session() as session:
        services = registered_services(session, repository)
    if not services:
        log.warning("git hook for unknown repository %s refused", repository)
        raise HTTPException(404, f"no service is registered for repository {repository}")
    allowed = [s for s in services if identity.may_act_on(s.name)]
    if not allowed:
        raise HTTPException(
            403,
            f"{scoping.who(identity)} may trigger {identity.limits()} only, not the services "
            f"of {repository} ({', '.join(s.name for s in services)})",
        )
    return list(allowed)


@router.post(
    "/hooks/git",
    status_code=202,
    response_model=HookAnswer,
    responses={
        200: {"model": HookAnswer, "description": "A change already received (a retry)."},
        **errors(413),
    },
)
def git_hook(request: Request, body: GitPush, identity: Trigger) -> JSONResponse:
    """A push to a repository on this machine, from `conveyor hook install`'s hook."""
    state = _state(request)
    services = _services_of(request, body.repository, identity)
    delivery = (
        body.delivery
        or hashlib.sha256(
            f"{body.repository}\0{body.ref}\0{body.before}\0{body.after}".encode()
        ).hexdigest()[:32]
    )
    payload = body.model_dump(exclude={"delivery", "pusher"}) | pusher_of(identity, body.pusher)
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


# A hook waits this long at most for its change to become a run (GET /hooks/git/{delivery}).
HOOK_WAIT_SECONDS = 5.0
HOOK_POLL_SECONDS = 0.05


def _outcomes(request: Request, delivery: str, identity: Identity) -> list[dict[str, Any]]:
    with _state(request).store.session() as session:
        rows = session.scalars(
            select(Delivery)
            .where(Delivery.source == "git", Delivery.delivery_id.like(f"%:{delivery}"))
            .order_by(Delivery.service)
        ).all()
        return [
            {
                "service": row.service,
                "status": row.status,
                "run": row.run_id,
                "reason": row.reason if row.status == "ignored" else None,
            }
            for row in rows
            if row.delivery_id == f"{row.service}:{delivery}" and identity.may_act_on(row.service)
        ]


@router.get("/hooks/git/{delivery}", response_model=HookChange, responses=errors(404))
async def git_hook_outcome(
    request: Request,
    delivery: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    identity: Trigger,
    wait: Annotated[float, Query(ge=0, le=HOOK_WAIT_SECONDS)] = 0,
) -> dict[str, Any]:
    """The runs a change delivered by the git hook started (the hook prints them): waits up
    to ``wait`` seconds for the intake to turn it into runs."""
    deadline = time.monotonic() + wait
    while True:
        outcomes = await asyncio.to_thread(_outcomes, request, delivery, identity)
        if not outcomes:
            raise HTTPException(404, f"no change {delivery} was received from a git hook")
        pending = any(o["status"] in ("received", "claimed") for o in outcomes)
        if not pending or time.monotonic() >= deadline:
            return {"delivery": delivery, "outcomes": outcomes}
        await asyncio.sleep(HOOK_POLL_SECONDS)


class HookTokenIn(BaseModel):
    repository: str = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")
    # The token of the hook being replaced: revoked if it is a hook token of the same services.
    replaces: str | None = Field(None, max_length=200)


@router.post("/hook-tokens", status_code=201, response_model=HookToken)
def hook_token(request: Request, body: HookTokenIn, identity: Admin) -> dict[str, Any]:
    """A token for one repository's git hook (`conveyor hook install`): scope trigger, limited
    to the services built from that repository, and of no user (pushers it names are claims).
    Shown once."""
    names = [s.name for s in _services_of(request, body.repository, identity)]
    token, name, revoked = create_hook_token(_state(request).store, names, body.replaces)
    return {"token": token, "name": name, "services": sorted(names), "revoked": revoked}


def pusher_of(identity: Identity, claimed: str | None) -> dict[str, Any]:
    """Who pushed, as the change records it: ``pusher`` and how it is known (``pusher_via``)."""
    if identity.user is not None:
        found: dict[str, Any] = {"pusher": identity.user, "pusher_via": f"token {identity.name}"}
        if claimed and claimed != identity.user:
            log.warning(
                "git hook with %s's token named %r as the pusher; recorded %s",
                identity.user,
                claimed,
                identity.user,
            )
            found["pusher_claimed"] = claimed
        return found
    return {"pusher": claimed, "pusher_via": f"claimed by token {identity.name}"}


@router.post(
    "/hooks/{forge}/{service}",
    status_code=202,
    response_model=HookAnswer,
    responses=errors(409, 413, 503),
)
async def forge_hook(request: Request, forge: str, service: str) -> JSONResponse:
    """A push webhook from GitHub, GitLab or Gitea/Forgejo, signed with the service's secret."""
    from conveyor.forges import WebhookRejected, known, verify_and_parse

    state = _state(request)
    limit = state.config.webhook_max_bytes
    try:
        body = await read_body(request, limit)
    except HTTPException as exc:
        log.warning(
            "%s webhook for %s refused (%d): %s", forge, service, exc.status_code, exc.detail
        )
        raise
    svc = state.service(service) if known(forge) else None
    try:
        push = verify_and_parse(
            forge,
            dict(request.headers),
            body,
            secret=svc["secret"] if svc else _NO_SECRET,
            allow_unsigned=bool(svc and svc["allow_unsigned"]),
            max_bytes=limit,
        )
        if svc is None and known(forge):
            # Unreachable (nobody knows _NO_SECRET); kept so that a mistake cannot let one in.
            raise WebhookRejected(401, "unknown service")
    except WebhookRejected as exc:
        why = exc.message if svc is not None else f"there is no service {service!r}"
        log.warning("%s webhook for %s refused (%d): %s", forge, service, exc.status, why)
        raise HTTPException(exc.status, UNSIGNED if exc.status == 401 else exc.message) from None
    if push is None:
        return JSONResponse({"status": "ignored", "reason": "not a push event"}, status_code=202)
    delivery = push.delivery_id or hashlib.sha256(body).hexdigest()[:32]
    payload = {
        "ref": push.ref,
        "before": push.before,
        "after": push.after,
        "pusher": push.pusher,
        "pusher_via": f"{forge} webhook",
        "repository": push.repository,
        "commits": [c.sha for c in push.commits][:100],
    }
    new = await state.changes.record(
        source=forge, delivery_id=delivery, service=service, payload=payload
    )
    return _accepted(forge, service, delivery, new)
