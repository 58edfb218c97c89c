"""GET /overview: every service × environment at a glance, and each service's latest runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from conveyor.server.auth import require
from conveyor.server.tokens import Identity
from conveyor.views import overview as overview_queries

router = APIRouter()
Reader = Annotated[Identity, Depends(require("read"))]


@router.get("/overview", tags=["overview"])
def overview(request: Request, _: Reader) -> dict[str, Any]:
    return overview_queries.overview(request.app.state.conveyor.store)
