"""/teams and GET /dora/portfolio: teams (named groups of services) and DORA side by side
(metrics/teams.py, metrics/portfolio.py)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from conveyor.server.schemas.common import Schema
from conveyor.server.schemas.dora import DoraFigure, DoraSettings, DoraTiers, DoraWindow

__all__ = ["PortfolioEntry", "PortfolioReport", "PortfolioScope", "TeamOut"]


class TeamOut(Schema):
    name: str
    services: list[str] = Field(description="Its services, by name.")
    created_at: dt.datetime
    created_by: str | None = Field(description="Who created it.")


class PortfolioEntry(Schema):
    service: str | None = Field(description="The service; null in the aggregate.")
    tier: str | None = Field(
        description="The lowest tier any of its tiered figures meets; null: none has one."
    )
    metrics: dict[str, DoraFigure] = Field(
        description="As GET /dora gives them for this service (or, in the aggregate, for all of "
        "the portfolio's services together)."
    )


class PortfolioScope(Schema):
    env_tier: str = Field(description="The environment tier measured (e.g. production).")
    services: list[str] = Field(
        description="The services side by side: the team's, or every one with facts in reach."
    )


class PortfolioReport(Schema):
    window: DoraWindow
    previous_window: DoraWindow | None = Field(description="The window of the same length before.")
    team: str | None = Field(description="The team asked for; null: every service.")
    scope: PortfolioScope
    settings: DoraSettings
    tiers: DoraTiers
    aggregate: PortfolioEntry = Field(description="All of the services together.")
    services: list[PortfolioEntry] = Field(description="One entry per service, by name.")
