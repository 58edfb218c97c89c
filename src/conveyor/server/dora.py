"""GET /api/v1/dora: the DORA report as `conveyor dora --json` prints it (token scope: read).

A plain (not async) route: computing a large window takes CPU for a while, and FastAPI runs
plain routes in its thread pool, so the event loop keeps serving everyone else meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from conveyor.metrics.dora_query import params_of
from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS
from conveyor.server.schemas.dora import DoraReport
from conveyor.server.tokens import Identity

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]


def window_params(
    env_tier: str = "production",
    since: str | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    by: Literal["day", "week", "month"] = "week",
    tz: str = "UTC",
    week_start: str = "monday",
    lead_time_from: Literal["committed", "authored", "seen"] = "committed",
    tiers: str = "2023",
    look_back: str = "30d",
    attribution_window: str = "48h",
) -> dict[str, Any]:
    """The window and settings of a report (one, or side by side), under `conveyor dora`'s
    option names (metrics.dora.from_params reads them)."""
    return params_of(locals())  # its parameters, and nothing else yet


WindowQuery = Annotated[dict[str, Any], Depends(window_params)]


def report_params(
    query: WindowQuery, service: str | None = None, explain: bool = False
) -> dict[str, Any]:
    """One report's query: its window and settings, of one service or all, explained or not."""
    return query | {"service": service, "explain": explain}


ReportQuery = Annotated[dict[str, Any], Depends(report_params)]


@router.get("/dora", tags=["metrics"], response_model=DoraReport, response_model_exclude_unset=True)
def dora_report(request: Request, _: Reader, query: ReportQuery) -> dict[str, Any]:
    """The five DORA metrics, batch size and work in progress for a window (default: the last
    90 days), with tiers and the previous window's values; ``explain`` adds what is behind
    each figure. The parameters are `conveyor dora`'s."""
    from conveyor.metrics.dora import from_params
    from conveyor.metrics.load import report

    window, settings = from_params(query)
    # Never waits for a whole history to be summarised (after an upgrade): the background does.
    store = request.app.state.conveyor.store
    return report(store, window, settings, summarise=False).to_json()
