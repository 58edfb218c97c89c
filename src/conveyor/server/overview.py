"""GET /overview: every service × environment at a glance, and each service's latest runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS
from conveyor.server.schemas.overview import Overview
from conveyor.server.tokens import Identity
from conveyor.views import overview as overview_queries

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]


@router.get("/overview", tags=["overview"], response_model=Overview)
def overview(request: Request, _: Reader) -> dict[str, Any]:
    return overview_queries.overview(request.app.state.conveyor.store)
