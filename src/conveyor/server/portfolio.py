"""Teams and DORA side by side: GET /teams (read), POST /teams and DELETE /teams/{name}
(admin, for a caller limited to no service: a team spans services), and
GET /dora/portfolio (read), the figures of each service of a team (or of every service) with
their aggregate, as `conveyor dora --team NAME --json` prints them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from conveyor.metrics import teams
from conveyor.server import scoping
from conveyor.server.auth import require
from conveyor.server.delivery import _actor
from conveyor.server.dora import WindowQuery
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.teams import PortfolioReport, TeamOut
from conveyor.server.tokens import Identity

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]
Admin = Annotated[Identity, Depends(require("admin"))]


class TeamIn(BaseModel):
    name: str = Field(max_length=200)
    services: list[str] = Field(max_length=1000, description="Known services, by name.")


def _store(request: Request) -> Any:
    return request.app.state.conveyor.store


@router.get("/teams", tags=["teams"], response_model=list[TeamOut])
def list_teams(request: Request, _: Reader) -> list[dict[str, Any]]:
    return teams.list_teams(_store(request))


@router.post("/teams", status_code=201, tags=["teams"], response_model=TeamOut)
def create_team(request: Request, body: TeamIn, identity: Admin) -> dict[str, Any]:
    """A new team of known services; an unknown service or a name in use is refused (400)
    and nothing is stored."""
    scoping.unlimited(identity, "managing teams")
    return teams.create_team(_store(request), body.name, body.services, _actor(identity))


@router.delete("/teams/{name}", tags=["teams"], response_model=TeamOut, responses=errors(404))
def delete_team(request: Request, name: str, identity: Admin) -> dict[str, Any]:
    """Forget a team (its services and their history stay); answers the team as it was."""
    scoping.unlimited(identity, "managing teams")
    return teams.delete_team(_store(request), name, _actor(identity))


@router.get(
    "/dora/portfolio",
    tags=["metrics"],
    response_model=PortfolioReport,
    response_model_exclude_unset=True,
    responses=errors(404),
)
def dora_portfolio(
    request: Request, _: Reader, query: WindowQuery, team: str | None = None
) -> dict[str, Any]:
    """The five DORA figures of each service side by side, with their aggregate: a team's
    services (``team``), or every service. The other parameters are GET /dora's."""
    from conveyor.metrics.dora import from_params
    from conveyor.metrics.portfolio import portfolio

    window, settings = from_params(query)
    return portfolio(_store(request), window, settings, team)
