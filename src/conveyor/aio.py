"""Small asyncio helpers every part may use (a leaf: imports nothing of Conveyor)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

__all__ = ["wait_for", "wake_loop"]


async def wait_for(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds, then clear it; True if it was set.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives in the same
    turn as the event is set, and a background loop cancelled at shutdown would run on."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
    finally:
        event.clear()


async def wake_loop(
    work: Callable[[], Awaitable[bool | None]], wake: asyncio.Event, every: float
) -> NoReturn:
    """Do `work` whenever `wake` is set, and at least every `every` seconds (what another
    process did wakes nobody here); at once again while it returns True (more to do).

    The one loop of every background service (delivery, outbox, CDEvents, the built-in
    runner, the server's periodic services). `wake` is cleared before the work, so a wake-up
    set while it runs starts another round instead of being lost."""
    while True:
        wake.clear()
        if not await work():
            await wait_for(wake, every)
