"""DORA performance tiers (elite, high, medium, low) as versioned data.

Each table is a JSON file in metrics/tiers/ that cites its report (title, year, URL, section)
and says which of its values could not be confirmed. Tables are data, not code, so a new year
is a new file and a team can see exactly what its figures are compared with.

Bounds are expressed on a lower-is-better quantity per metric, so one rule classifies all of
them: deployment frequency as mean days between deployments, lead time and recovery time in
hours, change failure rate as a ratio. A value gets the first tier (best first) whose bound it
meets; a value meeting none gets the last tier.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from conveyor.errors import ConveyorError

METRICS = ("deployment_frequency", "lead_time", "change_failure_rate", "recovery_time")
# Table units → the engine's: lead time and recovery time are hours in the files, seconds here.
SCALE = {
    "deployment_frequency": 1.0,
    "lead_time": 3600.0,
    "change_failure_rate": 1.0,
    "recovery_time": 3600.0,
}


@dataclass(frozen=True)
class Bound:
    text: str
    limit: float
    inclusive: bool

    def met(self, value: float) -> bool:
        return value <= self.limit if self.inclusive else value < self.limit


@dataclass(frozen=True)
class Tier:
    name: str
    bounds: dict[str, Bound]


@dataclass(frozen=True)
class TierTable:
    id: str
    year: int
    title: str
    url: str
    tiers: tuple[Tier, ...]
    data: dict[str, Any]

    def classify(self, metric: str, value: float | None) -> str | None:
        """The tier of ``value`` for ``metric`` (None: no value, or no tier for that metric)."""
        if value is None or metric not in METRICS or math.isnan(value):
            return None
        for tier in self.tiers:
            if tier.bounds[metric].met(value):
                return tier.name
        return self.tiers[-1].name

    def describe(self) -> dict[str, Any]:
        """What the report says about the table it used: enough to look the source up."""
        return {
            "table": self.id,
            "year": self.year,
            "title": self.title,
            "publisher": self.data.get("publisher"),
            "url": self.url,
            "section": self.data.get("section"),
            "tiers": [
                {"name": t.name} | {m: t.bounds[m].text for m in METRICS} for t in self.tiers
            ],
            "notes": list(self.data.get("notes", [])),
        }


def available() -> list[str]:
    """The years of the tables shipped with Conveyor, oldest first."""
    folder = resources.files("conveyor.metrics") / "tiers"
    names = [p.name for p in folder.iterdir() if p.name.startswith("dora-")]
    return sorted(n.removeprefix("dora-").removesuffix(".json") for n in names)


@cache
def load(name: str) -> TierTable:
    """The table for ``name``: a year ("2023") or a table id ("dora-2023")."""
    year = name.removeprefix("dora-")
    path = resources.files("conveyor.metrics") / "tiers" / f"dora-{year}.json"
    if not year.isdigit() or not path.is_file():
        raise ConveyorError(
            f"there is no DORA tier table {name!r}",
            hint=f"choose one of {', '.join(available())}",
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    tiers = tuple(
        Tier(
            t["name"],
            {
                m: Bound(
                    t[m]["text"],
                    float(t[m].get("below", t[m].get("at_most"))) * SCALE[m],
                    "at_most" in t[m],
                )
                for m in METRICS
            },
        )
        for t in data["tiers"]
    )
    return TierTable(data["id"], int(data["year"]), data["title"], data["url"], tiers, data)
