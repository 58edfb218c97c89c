"""Which deployment an incident is blamed on, and why: the one rule (docs/metrics.md,
"Attribution"), applied by the incident record (engine.attribution), DORA and its --explain
(metrics.dora), and through them the API, the UI and CDEvents.

- explicit: the incident names a deployment (an alert's ``deployment`` label, a person's
  ``deployment``/``release``/``commit``, an imported record's ``deployment``): that one, unless
  it is a rollback (a rollback puts back what served before; it is no change to blame);
- by window: the deployment *serving* the incident's environment when it began (the latest to
  start serving at or before that instant; a deployment stopped by its checks before taking
  traffic never served and is never blamed), if it began while that deployment ran or within
  the attribution window after it finished;
- otherwise none: the incident counts for incident recovery, not for change failure rate.

Pure: callers find the candidates (by SQL or from facts in memory) and this decides. Times are
epoch seconds.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Served:
    """A deployment that served its environment from ``served`` (epoch seconds) on.
    ``label`` names it in words (an imported deployment by its own id)."""

    key: str
    label: str
    rollback: bool
    served: float
    finished: float | None


@dataclass(frozen=True)
class Blame:
    """The deployment blamed (its key, or None), how, and why in words."""

    key: str | None
    how: Literal["explicit", "window", "none"]
    detail: str


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def attribute(
    opened: float,
    *,
    named: Served | None,
    serving: Sequence[Served],
    window: float,
    where: str,
    why_named: str = "named by the incident",
) -> Blame:
    """Blame an incident that opened at ``opened``: on ``named`` if it names a deployment,
    else on the one of ``serving`` (sorted by ``served``; deployments of the incident's
    environment, ``where`` in words) that served when it opened, within ``window`` seconds
    after that one finished."""
    if named is not None:
        if named.rollback:
            return Blame(
                None, "none", f"it names rollback {named.label}, and rollbacks are not in the CFR"
            )
        return Blame(named.key, "explicit", f"{why_named}: {named.label}")
    i = bisect.bisect_right(serving, opened, key=lambda s: s.served) - 1
    if i < 0:
        return Blame(None, "none", f"no deployment was serving {where} when it began")
    live = serving[i]
    if live.rollback:
        return Blame(None, "none", f"the deployment serving {where}, {live.label}, is a rollback")
    if live.finished is None or opened <= live.finished:
        return Blame(
            live.key,
            "window",
            f"{live.label} was serving {where} when it began, before it finished",
        )
    after = opened - live.finished
    if after > window:
        return Blame(
            None,
            "none",
            f"{live.label} was serving {where}, but it began {hours(after)} after that "
            f"deployment finished (the attribution window is {hours(window)})",
        )
    return Blame(
        live.key,
        "window",
        f"{live.label} was serving {where} when it began, {hours(after)} after it finished "
        f"(window {hours(window)})",
    )
