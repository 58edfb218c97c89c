"""GET /stream: server-sent events telling the web UI that something it shows has changed.

Each event is `event: change` / `data: {"channel": NAME}`: a nudge to reload, not the data
itself, so the page reads the same API as everyone else. Bursts are coalesced: a channel is
announced at most once per COALESCE_SECONDS however many events arrive (a job writing logs
fast makes a few nudges a second, not one per line). Events committed by other processes (the
CLI against the same store, other servers) are found by polling the event log every
POLL_SECONDS. A comment line every HEARTBEAT_SECONDS keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from conveyor.events import EventType, types_of
from conveyor.server.auth import require
from conveyor.server.hub import Hub
from conveyor.server.schemas.common import ERRORS, event_stream
from conveyor.server.session import COOKIE, identity_from_cookie
from conveyor.server.tokens import Identity
from conveyor.store.db import Store
from conveyor.store.models import Event

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]

COALESCE_SECONDS = 0.25
POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0
# A browser's session is checked again this often: a stream ends with its session.
RECHECK_SECONDS = 30.0

_RUNS = types_of("pipelinerun", "taskrun", "step", "artifact")
# What each channel a page may subscribe to covers: whole families of the catalog, or types.
CHANNELS: dict[str, frozenset[EventType]] = {
    # Runs and jobs changing state (the hub's `dispatch` and more: started, finished, steps).
    "dispatch": _RUNS,
    "runs": _RUNS,
    "logs": types_of("log", "step", "taskrun", "pipelinerun"),
    "delivery": types_of("deployment", "release", "environment", "approval"),
    "approvals": types_of("approval"),
    "incidents": types_of("incident", "alert"),
    "services": types_of("service"),
    "teams": types_of("team"),
    "dora": types_of("deployment", "incident", "pipelinerun", "release")
    | {EventType.HISTORY_IMPORTED},
}


def channels_for(types: Iterable[str], wanted: Iterable[str]) -> set[str]:
    """The channels among `wanted` that events of these types concern."""
    types = set(types)
    return {channel for channel in wanted if not CHANNELS[channel].isdisjoint(types)}


def _last_event_id(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0)


def _types_since(store: Store, after: int) -> tuple[int, set[str]]:
    """The types of events after `after`, and the last event id seen."""
    with store.session() as session:
        rows = session.execute(
            select(Event.id, Event.type).where(Event.id > after).order_by(Event.id).limit(5000)
        ).all()
    return (rows[-1][0] if rows else after), {kind for _, kind in rows}


def _message(channel: str) -> bytes:
    return f"event: change\ndata: {json.dumps({'channel': channel})}\n\n".encode()


@router.get(
    "/stream",
    tags=["live"],
    response_class=StreamingResponse,
    responses=event_stream('Server-sent events: `change` with {"channel": ...}.'),
)
async def stream(
    request: Request,
    _: Reader,
    channels: Annotated[
        str | None,
        Query(description=f"Comma-separated; default all of: {', '.join(sorted(CHANNELS))}"),
    ] = None,
) -> StreamingResponse:
    """Server-sent events: `change` with {"channel": ...} whenever a channel's events happen."""
    state: Any = request.app.state.conveyor
    wanted = set(CHANNELS) if not channels else {c.strip() for c in channels.split(",") if c}
    unknown = sorted(wanted - set(CHANNELS))
    if unknown:
        raise HTTPException(
            400, f"unknown channel {', '.join(unknown)} (channels: {', '.join(sorted(CHANNELS))})"
        )
    hub: Hub | None = state.hub
    if hub is None:
        raise HTTPException(503, "the server is starting or stopping; try again")
    store: Store = state.store
    cookie = None if request.headers.get("authorization") else request.cookies.get(COOKIE)

    def session_ended() -> bool:
        return cookie is not None and identity_from_cookie(store, cookie) is None

    async def events() -> AsyncIterator[bytes]:
        with hub.tapping() as tap:
            last_id = await asyncio.to_thread(_last_event_id, store)
            yield b": connected\n\n"
            next_poll = time.monotonic() + POLL_SECONDS
            next_beat = time.monotonic() + HEARTBEAT_SECONDS
            next_check = time.monotonic() + RECHECK_SECONDS
            while not state.stopping.is_set() and not await request.is_disconnected():
                wait = max(
                    0.0, min(next_poll, next_beat, time.monotonic() + 1.0) - time.monotonic()
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await tap.changed.wait()
                types: set[str] = set()
                if tap.changed.is_set():
                    # Let the rest of a burst arrive, then announce it once.
                    await asyncio.sleep(COALESCE_SECONDS)
                    types = tap.take()
                    # What was announced here need not be found again by the poll.
                    last_id = max(last_id, await asyncio.to_thread(_last_event_id, store))
                now = time.monotonic()
                if now >= next_poll:
                    last_id, polled = await asyncio.to_thread(_types_since, store, last_id)
                    types |= polled
                    next_poll = now + POLL_SECONDS
                if now >= next_check:
                    if await asyncio.to_thread(session_ended):
                        return  # the browser reconnects, is refused, and goes to sign in
                    next_check = now + RECHECK_SECONDS
                fired = channels_for(types, wanted)
                for name in sorted(fired):
                    yield _message(name)
                if fired:
                    next_beat = now + HEARTBEAT_SECONDS
                elif now >= next_beat:
                    yield b": keep-alive\n\n"
                    next_beat = now + HEARTBEAT_SECONDS

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
