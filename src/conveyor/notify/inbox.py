"""The inbox: notices kept on the server for people to read in the web UI (/inbox).

An inbox notice needs no sending: the outbox row written with the event that caused it *is*
the inbox entry (table ``notifications``, channel ``inbox``), persisted in the same transaction
as that event. "Delivering" it only marks it delivered, so an inbox never fails, never retries
and works on a machine that reaches nothing outside. The API reads the rows back
(conveyor.views.inbox), newest first.
"""

from __future__ import annotations

from conveyor.extensions import Options
from conveyor.notify.base import Notice, NotifyContext, notifier

__all__ = ["CHANNEL", "EXTENSION", "InboxNotifier"]

CHANNEL = "inbox"


class InboxNotifier(Options):
    """Keep the notice in the server's own inbox (the web UI's /inbox page); nothing leaves
    the machine. Written `inbox: {}` (or `inbox:` alone)."""


async def _send(options: InboxNotifier, notice: Notice, context: NotifyContext) -> None:
    """Nothing to carry anywhere: the notice is already in the store."""


EXTENSION = notifier(CHANNEL, InboxNotifier, _send, order=40)
