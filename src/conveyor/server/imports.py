"""History import over the API: ``POST /api/v1/import`` with the JSON Lines file as the body.

All or nothing, as on the command line: a bad line answers 400 with every error found (each
naming its line and field) and nothing is stored. Relative ``repository`` paths are refused
(there is no file to be relative to); absolute ones are read on the server, which is why the
endpoint needs the ``admin`` scope.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from conveyor.metrics.imports import ImportFailed, decode, import_history
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.hooks import read_body
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.intake import ImportSummary
from conveyor.server.tokens import Identity

router = APIRouter(tags=["import"], responses=ERRORS)
Admin = Annotated[Identity, Depends(require("admin"))]


@router.post(
    "/import",
    response_model=ImportSummary,
    responses=errors(413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def import_file(
    request: Request, identity: Admin, dry_run: bool = False
) -> dict[str, Any] | JSONResponse:
    """Import deployment and incident history (JSON Lines; see docs/import.md)."""
    scoping.unlimited(identity, "importing history")
    # server/limits.py has refused a larger body already; this holds for any other caller.
    limit = request.app.state.conveyor.config.body_limits.imports
    body = await read_body(request, limit, f"the file is larger than {limit} bytes; split it")
    try:
        text = decode(body)
        summary = await run_in_threadpool(
            import_history,
            request.app.state.conveyor.store,
            text,
            base=None,
            dry_run=dry_run,
            actor=identity.user or f"token:{identity.name}",
            origin="api",
        )
    except ImportFailed as exc:
        error: dict[str, Any] = {
            "code": "invalid_import",
            "message": exc.message,
            "errors": exc.errors,
        }
        if exc.hint:
            error["hint"] = exc.hint
        return JSONResponse({"error": error}, status_code=400)
    return summary.as_dict()
