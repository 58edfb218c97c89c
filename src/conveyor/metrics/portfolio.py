"""DORA side by side: every service's figures (or a team's services'), with their aggregate.

The facts are loaded once for the whole scope (metrics.load); each service's figures are then
computed from its share of the same facts, and the aggregate from all of them, by the one
engine (metrics.dora). A service's row is therefore what `conveyor dora --service NAME` gives
for the same window and settings, and the aggregate what `conveyor dora` gives for all services
(for a team: for its services together).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conveyor.metrics import tiers as tier_tables
from conveyor.metrics.dora import RID, SERVICE, DoraReport, Facts, Settings, Window, compute_facts
from conveyor.metrics.load import load_facts, work_in_progress, work_in_progress_by_service
from conveyor.metrics.teams import team_services
from conveyor.store.db import Store


def portfolio(
    store: Store, window: Window, settings: Settings, team: str | None = None
) -> dict[str, Any]:
    """The portfolio of ``team`` (None: every service) over ``window``, as JSON."""
    members = team_services(store, team) if team else None
    scope = replace(
        settings,
        service=None,
        services=None if members is None else frozenset(members),
        explain=False,
    )
    facts = load_facts(store, window, scope, wip=False)
    names = members if members is not None else _measured(facts)
    # Work in progress comes from releases, not facts: one statement for the scope, then shared.
    with store.session() as session:
        facts.wip = work_in_progress(session, scope)
        wip = work_in_progress_by_service(session, scope, names)
    whole = compute_facts(facts, window, scope)
    shares = _shares(facts, names, wip)
    rows = []
    for name in names:
        one = replace(scope, service=name, services=None)
        found = compute_facts(shares[name], window, one)
        rows.append({"service": name, **_figures(found)})
    data = whole.to_json()
    return {
        "window": data["window"],
        "previous_window": data["previous_window"],
        "team": team,
        "scope": {"env_tier": scope.tier, "services": names},
        "settings": data["settings"],
        "tiers": data["tiers"],
        "aggregate": {"service": None, **_figures(whole)},
        "services": rows,
    }


def overall_tier(report: DoraReport) -> str | None:
    """The lowest tier any of the report's tiered figures meets: a service is only as elite as
    its weakest key (None: no figure has a tier)."""
    order = [t.name for t in report.tiers.tiers]
    found = [
        order.index(fig.tier)
        for key, fig in report.figures.items()
        if key in tier_tables.METRICS and fig.tier in order
    ]
    return order[max(found)] if found else None


def _figures(report: DoraReport) -> dict[str, Any]:
    return {
        "tier": overall_tier(report),
        "metrics": {k: f.to_json(False) for k, f in report.figures.items()},
    }


def _measured(facts: Facts) -> list[str]:
    """The services the facts hold deployments or incidents of."""
    return sorted({d[SERVICE] for d in facts.deployments} | {i.service for i in facts.incidents})


def _shares(facts: Facts, names: list[str], wip: dict[str, dict[str, Any]]) -> dict[str, Facts]:
    """Each service's share of ``facts``, in one pass over each list (commits stay ordered by
    deployment, as the engine wants them)."""
    rows: dict[str, list[Any]] = {n: [] for n in names}
    owner: dict[int, str] = {}
    for d in facts.deployments:
        if d[SERVICE] in rows:
            rows[d[SERVICE]].append(d)
            owner[d[RID]] = d[SERVICE]
    commits: dict[str, list[Any]] = {n: [] for n in names}
    for c in facts.commits:
        service = owner.get(c[0])
        if service is not None:
            commits[service].append(c)
    incidents: dict[str, list[Any]] = {n: [] for n in names}
    for i in facts.incidents:
        if i.service in incidents:
            incidents[i.service].append(i)
    return {n: Facts(rows[n], commits[n], incidents[n], facts.env_tiers, wip[n]) for n in names}
