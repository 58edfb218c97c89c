"""Small asyncio helpers every part may use (a leaf: imports nothing of Conveyor)."""

from __future__ import annotations

import asyncio

__all__ = ["wait_for"]


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
