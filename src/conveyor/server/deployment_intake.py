"""Live intake of deployments made by another CD system: ``POST /api/v1/intake/deployments``
with one deployment as it happens, a CDEvent ``service.deployed``, ``service.upgraded`` or
``service.rolledback`` (bare or as a structured CloudEvent) or a native record
(``{"kind": "deployment", ...}``, docs/import.md).

It takes a ``trigger`` token (what a CD system's pipeline already holds to tell Conveyor
things), not the ``admin`` one that batch import needs: it goes through the same import
(metrics.imports: checked, idempotent by service and id), but accepts one deployment only and
no ``repository`` (a path read on the server is for admins). A token limited to services or
environments may report deployments of those only. A bad body is answered 400 with every
error found and nothing stored; the same deployment sent again is answered 200 ``present``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from conveyor import jsonio
from conveyor.metrics.imports import ImportFailed, decode, import_history, parse
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.hooks import read_body
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.intake import DeploymentTaken
from conveyor.server.tokens import Identity

router = APIRouter(tags=["import"], responses=ERRORS)
Trigger = Annotated[Identity, Depends(require("trigger"))]


def _refused(message: str, found: list[str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": "invalid_deployment", "message": message}
    error["errors"] = found or [message]
    return JSONResponse({"error": error}, status_code=400)


def _without_line(errors: list[str]) -> list[str]:
    """The import names the line; a body is one record."""
    return [e.removeprefix("line 1: ") for e in errors]


@router.post(
    "/intake/deployments",
    response_model=DeploymentTaken,
    status_code=201,
    responses=errors(413)
    | {200: {"model": DeploymentTaken, "description": "Already received (same service and id)."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/cloudevents+json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def take_deployment(request: Request, identity: Trigger) -> JSONResponse:
    """One deployment made by another CD system: a CDEvent (service.deployed, upgraded or
    rolledback) or a native deployment record; 201 when recorded, 200 when it was already."""
    state = request.app.state.conveyor
    limit = state.config.body_limits.api
    body = await read_body(request, limit, f"a deployment is at most {limit} bytes")
    try:
        obj = jsonio.loads(decode(body))
    except ImportFailed as exc:
        return _refused(exc.errors[0].removeprefix("line 1: "))
    except json.JSONDecodeError as exc:
        return _refused(f"not valid JSON: {exc.msg} (column {exc.colno})")
    except jsonio.TooDeep as exc:
        return _refused(f"not accepted: {exc}")
    if not isinstance(obj, dict):
        return _refused("a deployment is a JSON object")
    if obj.get("kind") == "incident":
        return _refused("this endpoint takes deployments: open incidents with POST /incidents")
    text = jsonio.dumps(obj)
    try:
        parsed = parse(text)
    except ImportFailed as exc:
        shown = _without_line(exc.errors)
        return _refused(shown[0], shown)
    if parsed.incidents or not parsed.deployments:
        kinds = ", ".join(parsed.ignored) or "no deployment"
        return _refused(
            f"not a deployment ({kinds}): send a CDEvent service.deployed, service.upgraded or "
            'service.rolledback, or {"kind": "deployment", ...}'
        )
    deployment = parsed.deployments[0]
    if deployment.repository is not None:
        return _refused(
            "repository: not accepted here (a path read on the server): give the deployment's "
            "commits, or import it with an admin token"
        )
    scoping.check(identity, deployment.service, deployment.environment, "report deployments of")
    try:
        summary = await run_in_threadpool(
            import_history,
            state.store,
            text,
            base=None,
            actor=identity.user or f"token:{identity.name}",
            origin="intake",
        )
    except ImportFailed as exc:
        shown = _without_line(exc.errors)
        return _refused(shown[0], shown)
    created = summary.deployments_added > 0
    return JSONResponse(
        {
            "status": "created" if created else "present",
            "service": deployment.service,
            "environment": deployment.environment,
            "id": deployment.id,
            "result": deployment.result,
            "changes": summary.changes_added,
        },
        status_code=201 if created else 200,
    )
