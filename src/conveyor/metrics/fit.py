"""The default window fitted to a service's age: `conveyor dora` without --since or --from
reads the last 90 days, but a service first deployed a day ago is measured over its one day,
not rated "low" over 89 days it did not exist. The window says so (``note``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from sqlalchemy import func, select

from conveyor.metrics.dora_options import Settings, Window
from conveyor.store.db import Store
from conveyor.store.models import DeploymentFactRow as F


def fit_window(store: Store, window: Window, settings: Settings) -> Window:
    """``window`` from the local day of the first deployment in scope (tier and service) when
    that is later than its start and the window is the default one; else ``window``."""
    if not settings.fit_history:
        return window
    scope = [F.tier == settings.tier]
    if settings.service:
        scope.append(F.service == settings.service)
    with store.session() as session:
        first = session.scalar(select(func.min(F.started_at)).where(*scope))
    if first is None:
        return window
    aware = first if first.tzinfo else first.replace(tzinfo=dt.UTC)
    day = aware.astimezone(window.zone).date()
    if not window.start < day < window.end:
        return window
    return replace(
        window,
        start=day,
        note=f"from {day}, the first {settings.tier} deployment, not {window.start}: the "
        "default window starts no earlier than the history",
    )
