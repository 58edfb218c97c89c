"""The release record as a timeline (the release page reads it): GET /releases/{id}/timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.timeline import Timeline
from conveyor.server.tokens import Identity
from conveyor.views.timeline import release_timeline

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]


@router.get(
    "/releases/{release_id}/timeline",
    tags=["releases"],
    response_model=Timeline,
    responses=errors(404),
)
def timeline(request: Request, release_id: int, _: Reader) -> dict[str, Any]:
    """Everything that happened to one release, oldest first: ``entries`` of kind commit, run,
    release (artifacts, publication), deployment, rollback, approval and incident, each with
    ``at`` (when it began) and its details."""
    return release_timeline(request.app.state.conveyor.store, release_id)
