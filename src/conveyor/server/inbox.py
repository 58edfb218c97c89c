"""The inbox (GET /inbox): notices that `notify: [{inbox: {}}]` keeps for people to read in the
web UI; and GET /notifications: how every channel's notices were delivered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS
from conveyor.server.schemas.inbox import InboxNotice, NotificationOut
from conveyor.server.tokens import Identity
from conveyor.views.inbox import deliveries, inbox_notices

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]
MAX_ID = 2**63 - 1
Name = Annotated[str | None, Query(max_length=200)]


@router.get("/inbox", tags=["notifications"], response_model=list[InboxNotice])
def inbox(
    request: Request,
    _: Reader,
    service: Name = None,
    event: Annotated[str | None, Query(max_length=50)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Inbox notices, newest first: ``event``, ``title``, ``summary``, ``at``, what it is about
    (``service``, ``environment``, ``release``, ``sha``) and the records involved
    (``deployment_id``, ``approval_id``, ``incident_id``). ``after``: only notices with a
    greater id."""
    return inbox_notices(
        request.app.state.conveyor.store, service=service, event=event, after=after, limit=limit
    )


@router.get("/notifications", tags=["notifications"], response_model=list[NotificationOut])
def notifications(
    request: Request,
    _: Reader,
    service: Name = None,
    channel: Annotated[str | None, Query(pattern="^(slack|webhook|email|inbox)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Every notice of every channel, newest first, with its delivery: ``status`` (pending,
    sent, failed), ``attempts`` and the last ``error``."""
    return deliveries(
        request.app.state.conveyor.store, service=service, channel=channel, limit=limit
    )
