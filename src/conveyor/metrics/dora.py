"""The five DORA metrics and the flow figures, computed from facts (no I/O).

``compute(deployments, incidents, window, settings)`` turns DeploymentFacts and IncidentFacts
into a DoraReport; ``compute_facts`` does the same from the compact rows load.py reads straight
from SQL (one tuple per deployment, commits as flat columns), so a million deployments never
become a million objects. The definitions are docs/metrics.md's; each is applied in one place.

Times are epoch seconds inside: subtraction and bisect on floats keep this fast. The window,
its days and buckets are local calendar dates in the window's time zone, turned into instants
once; each deployment is placed by one bisect on the day boundaries, and every figure is then
added up from per-day tallies (so empty days and weeks are there, as zeros, by construction).
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from operator import itemgetter
from typing import Any

from conveyor.blame import Served, attribute
from conveyor.facts import DeploymentFact, IncidentFact
from conveyor.metrics import tiers as tier_tables
from conveyor.metrics.dora_options import (
    Settings,
    Window,
    fmt_duration,
    from_params,
    iso,
    parse_duration,
    window_for,
)
from conveyor.metrics.dora_report import (
    SPLIT,
    TITLES,
    DoraReport,
    Figure,
    Tally,
    add_up,
    figures_of,
    median,
    p90,
    rounded,
    series_of,
)

__all__ = [
    "Commit",
    "DoraReport",
    "Facts",
    "Figure",
    "Settings",
    "Window",
    "compute",
    "compute_facts",
    "fmt_duration",
    "from_params",
    "median",
    "p90",
    "parse_duration",
    "prepare",
    "window_for",
]

Row = tuple[Any, ...]
Items = dict[str, list[dict[str, Any]]]
Commit = tuple[int, float, str]  # (deployment row id, lead-time start, sha)
# A deployment row (load.py selects its columns in this order). STAGES: the five stage points
# as a tuple of epoch seconds, or the stored JSON (a dict, or its text), read only when needed.
RID, KEY, SERVICE, ENV, KIND, RESULT, SHA, STARTED, FINISHED, FAILED, ROLLBACK_OF, FIXES = range(12)
STAGES = 12
# When it began serving users (epoch seconds); None: never (stopped by its checks first).
SERVED = 13
STAGE_POINTS = (
    "run_started",
    "run_finished",
    "staging_finished",
    "approval_requested",
    "approval_decided",
)
# The value-stream stage that ends at each stage point, then at the deployment's end.
ENDS = ("waiting", "ci", "staging", "production", "approval", "production")


@dataclass
class Facts:
    """What the engine reads: deployment rows of one tier (with the margins load.py adds), their
    commits ordered by deployment row id (a deployment's commits are one slice, found by
    bisect), incidents, the tier of each (service, environment), and work in progress."""

    deployments: list[Row]
    commits: Sequence[Commit]
    incidents: Sequence[IncidentFact]
    env_tiers: Mapping[tuple[str, str], str] = field(default_factory=dict)
    wip: Mapping[str, Any] | None = None


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# --- entry points -----------------------------------------------------------------------------


def prepare(
    deployments: Iterable[DeploymentFact],
    incidents: Iterable[IncidentFact],
    settings: Settings,
    *,
    env_tiers: Mapping[tuple[str, str], str] | None = None,
    wip: Mapping[str, Any] | None = None,
) -> Facts:
    """Facts → rows: the deployments of ``settings.tier`` (and service), their commits timed
    from the chosen start (committer date where the author date or first-seen time is unknown).
    Every deployment still tells its environment's tier, for incidents naming only that."""
    tiers: dict[tuple[str, str], str] = {}
    rows: list[Row] = []
    commits: list[Commit] = []
    for f in deployments:
        tiers[(f.service, f.environment)] = f.tier
        if f.tier != settings.tier or not settings.covers(f.service):
            continue
        rid = len(rows)
        stages = tuple(_ts(f.stages.get(name)) for name in STAGE_POINTS)
        rows.append(
            (
                rid,
                f.id,
                f.service,
                f.environment,
                f.kind,
                f.result,
                f.sha,
                _ts(f.started_at),
                _ts(f.finished_at),
                _ts(f.failed_at),
                f.rollback_of,
                f.fixes_incident,
                stages,
                _ts(f.serving_from),
            )
        )
        for c in f.changes:
            start = {"authored": c.authored_at, "seen": c.seen_at}.get(settings.lead_time_from)
            commits.append((rid, (start or c.committed_at).timestamp(), c.sha))
    tiers.update(env_tiers or {})
    return Facts(rows, commits, list(incidents), tiers, wip)


def compute(
    deployments: Iterable[DeploymentFact],
    incidents: Iterable[IncidentFact],
    window: Window,
    settings: Settings | None = None,
    *,
    wip: Mapping[str, Any] | None = None,
    env_tiers: Mapping[tuple[str, str], str] | None = None,
) -> DoraReport:
    """The report for ``window`` from facts."""
    settings = settings or Settings()
    facts = prepare(deployments, incidents, settings, env_tiers=env_tiers, wip=wip)
    return compute_facts(facts, window, settings)


def compute_facts(facts: Facts, window: Window, settings: Settings) -> DoraReport:
    """The report from rows. Deployments outside the window are context: the previous success
    (first-deployment look-back), the attribution margin, rollbacks and restorations after."""
    span = window.previous() if settings.compare else window
    days = day_instants(span, window.end)
    first = (window.start - span.start).days
    items: Items = {k: [] for k in TITLES}
    tally = tally_days(facts, days, settings, items if settings.explain else None, first)
    report = report_of(tally, window, settings, facts.wip)
    if settings.explain:
        for key, found in items.items():
            report.figures[key].items = found
    return report


def day_instants(span: Window, end: dt.date) -> list[float]:
    """The local midnights from the span's first day to ``end``, as epoch seconds."""
    return [
        span.instant(span.start + dt.timedelta(days=i)) for i in range((end - span.start).days + 1)
    ]


def tally_days(
    facts: Facts,
    days: list[float],
    settings: Settings,
    items: Items | None = None,
    first: int = 0,
) -> Tally:
    """The engine's per-day tallies over ``days`` (local midnights); ``items`` collects what is
    behind the figures for the days from ``first`` on. A day's tally depends on the facts
    around it, never on where the span starts or ends (metrics.summary relies on that)."""
    tally = Tally(len(days) - 1)
    _Engine(facts, settings).run(days, first, tally, items)
    return tally


def report_of(
    tally: Tally, window: Window, settings: Settings, wip: Mapping[str, Any] | None
) -> DoraReport:
    """The report from per-day tallies over the span (the previous window's days first when
    ``settings.compare``): the engine's, or the summary's."""
    table = tier_tables.load(settings.tiers)
    span = window.previous() if settings.compare else window
    first = (window.start - span.start).days
    days = range(first, len(tally.deploys))
    series, total = series_of(window, settings.by, first, tally)
    stages = tally.stage_sums(days)
    figures = figures_of(window, total, table, stages, wip, settings.lead_time_from)
    if settings.compare:
        previous = figures_of(span, add_up(tally, range(0, first)), table, None, None)
        for key, fig in previous.items():
            figures[key].previous = fig.value
    services = sorted(set().union(*tally.services))
    environments = sorted(set().union(*tally.envs))
    return DoraReport(window, settings, table, figures, series, services, environments)


# --- the engine -------------------------------------------------------------------------------


@dataclass
class _Episode:
    """A failure to recover from: a failed deployment (with the incidents blamed on it), or
    incidents no deployment is blamed for (overlapping ones of a service together).
    ``restorer``: the deployment (key) that restored service, if one did."""

    id: str
    service: str
    detected: float
    detected_by: str
    restored: float | None
    restored_by: str
    restorer: str | None = None
    # What the UI links to: the deployment's fact key, or the incidents' record numbers.
    ref: str = ""


def label(key: str) -> str:
    """A deployment as a person knows it: an imported one by its own id, Conveyor's by its
    number (fact keys are "i:<service>:<id>" and "c<id>")."""
    if key.startswith("i:"):
        return key.split(":", 2)[2]
    return key[1:] if key.startswith("c") and key[1:].isdigit() else key


class _Engine:
    """Indexes over the deployments and incidents in scope, attribution, and the one pass."""

    def __init__(self, facts: Facts, settings: Settings) -> None:
        self.s = settings
        self.commits = facts.commits
        deps = [d for d in facts.deployments if settings.covers(d[SERVICE])]
        deps.sort(key=itemgetter(FINISHED, STARTED, KEY))
        self.deps = deps
        self.by_key = {d[KEY]: d for d in deps}
        # What served when (conveyor.blame): by service and environment, and by service, the
        # deployments that served users, in the order they began to (as Served only for the
        # pairs an incident asks about: a million deployments need not become objects).
        self.served_rows: dict[tuple[str, str | None], list[Row]] = {}
        self.serving: dict[tuple[str, str | None], list[Served]] = {}
        # Healthy deployments and rollbacks by service and environment, in finish order: what
        # may restore service.
        self.healthy: dict[tuple[str, str], list[Row]] = {}
        self.rolled_back_by: dict[str, list[Row]] = {}
        for d in sorted(
            (d for d in deps if d[SERVED] is not None), key=itemgetter(SERVED, FINISHED, KEY)
        ):
            self.served_rows.setdefault((d[SERVICE], d[ENV]), []).append(d)
            self.served_rows.setdefault((d[SERVICE], None), []).append(d)
        for d in deps:
            if d[RESULT] == "succeeded":
                self.healthy.setdefault((d[SERVICE], d[ENV]), []).append(d)
            if d[KIND] == "rollback" and d[ROLLBACK_OF]:
                self.rolled_back_by.setdefault(d[ROLLBACK_OF], []).append(d)
        self.attributed: dict[str, list[tuple[IncidentFact, str]]] = {}
        self.incident_items: list[dict[str, Any]] = []
        standalone: list[IncidentFact] = []
        incidents = sorted(
            (i for i in facts.incidents if self._in_scope(i, facts.env_tiers)),
            key=lambda i: (i.opened_at, i.id),
        )
        for inc in incidents:
            why = self._attribute(inc)
            if why:
                standalone.append(inc)
                self._note(inc, f"not attributed: {why}; counts for incident recovery, not the CFR")
        self.failing = set(self.rolled_back_by) | set(self.attributed)
        # Services deployed to several environments of the tier: a commit may be in the range
        # of each; it counts once. Within one environment ranges never overlap (each starts
        # after the previous successful deployment there), so no bookkeeping is needed.
        envs: dict[str, set[str]] = {}
        for service, env in self.served_rows:
            if env is not None:
                envs.setdefault(service, set()).add(env)
        self.shared = {service for service, names in envs.items() if len(names) > 1}
        # Each failure's episode, and the deployments that restored service after a failure
        # was known (fix-forwards: unplanned, rework).
        self.episodes = {
            d[KEY]: self.episode(d)
            for d in deps
            if d[KIND] == "deploy"
            and d[SERVED] is not None
            and (d[RESULT] != "succeeded" or d[KEY] in self.failing)
        }
        self.standalone = [self.incidents_episode(g) for g in _groups(standalone)]
        self.fixes: dict[str, str] = {}
        for ep in [*self.episodes.values(), *self.standalone]:
            # Made because of the failure: started once it was known, and restored service.
            fix = self.by_key.get(ep.restorer) if ep.restorer is not None else None
            if fix is not None and fix[STARTED] >= ep.detected:
                self.fixes.setdefault(fix[KEY], ep.id)

    def _in_scope(self, inc: IncidentFact, env_tiers: Mapping[tuple[str, str], str]) -> bool:
        """An incident belongs to the tier of the deployment it names, else of its environment;
        one naming neither is a production incident."""
        if not self.s.covers(inc.service):
            return False
        named = self.by_key.get(inc.deployment) if inc.deployment else None
        if named is not None and named[SERVICE] == inc.service:
            return True
        if inc.environment is None:
            return self.s.tier == "production"
        return env_tiers.get((inc.service, inc.environment), "production") == self.s.tier

    def _attribute(self, inc: IncidentFact) -> str:
        """Blame ``inc`` on a deployment (conveyor.blame), or say why not."""
        named = self.by_key.get(inc.deployment) if inc.deployment else None
        if named is not None and named[SERVICE] != inc.service:
            named = None
        blame = attribute(
            inc.opened_at.timestamp(),
            named=None
            if named is None
            else Served(named[KEY], _named(named), named[KIND] == "rollback", named[STARTED], None),
            serving=self._serving((inc.service, inc.environment)),
            window=self.s.attribution_window.total_seconds(),
            where=inc.environment or f"any environment of {inc.service}",
        )
        if blame.key is None:
            return blame.detail
        how = "by window" if blame.how == "window" else blame.how
        self.attributed.setdefault(blame.key, []).append((inc, how))
        self._note(inc, f"attributed to {label(blame.key)} ({blame.how}): {blame.detail}")
        return ""

    def _serving(self, pair: tuple[str, str | None]) -> list[Served]:
        found = self.serving.get(pair)
        if found is None:
            found = self.serving[pair] = [
                Served(d[KEY], _named(d), d[KIND] == "rollback", d[SERVED], d[FINISHED])
                for d in self.served_rows.get(pair, ())
            ]
        return found

    def _note(self, inc: IncidentFact, how: str) -> None:
        """Say in the explanation of the CFR what became of an incident."""
        item = _item("incident", inc.id, inc.service, inc.opened_at.timestamp(), None, how)
        item["ref"] = inc.ref or inc.id
        self.incident_items.append(item)

    def _restore(
        self, service: str, env: str | None, after: float, failed: Row | None = None
    ) -> tuple[float | None, str, str | None]:
        """The first healthy rollback or deployment finished after ``after`` in ``env`` (or any
        environment of the service, for an incident without one); for a failed deployment, a
        *later* one: started after it, never the failed deployment itself."""
        pairs = [(service, env)] if env else [p for p in self.healthy if p[0] == service]
        best: tuple[float | None, str, str | None] = (None, "", None)
        for pair in pairs:
            rows = self.healthy.get(pair, [])
            start = bisect.bisect_right(rows, after, key=itemgetter(FINISHED))
            for i in range(start, len(rows)):  # by index: no copy of the rest
                d = rows[i]
                if best[0] is not None and d[FINISHED] >= best[0]:
                    break
                if failed is not None and (d is failed or d[STARTED] < failed[STARTED]):
                    continue
                what = "rollback" if d[KIND] == "rollback" else "deployment"
                best = (d[FINISHED], f"healthy {what} {_named(d)} in {pair[1]} finished", d[KEY])
                break
        return best

    def failure(self, d: Row) -> list[str]:
        """Why deployment ``d`` failed (empty: it did not). It counts once whatever the number
        of reasons; all are kept for --explain."""
        why = {"failed": ["health or verification failed"], "rolled_back": ["rolled back"]}
        found = list(why.get(d[RESULT], []))
        found += [f"undone by rollback {_named(r)}" for r in self.rolled_back_by.get(d[KEY], ())]
        found += [f"incident {i.id} ({how})" for i, how in self.attributed.get(d[KEY], ())]
        return found

    def episode(self, d: Row) -> _Episode:
        """Detected: first of its failed check, a rollback of it starting, an incident blamed on
        it opening (else its end). Restored: first of a later healthy rollback or deployment in
        its environment after that, and all its incidents resolved."""
        found = [(d[FAILED], "check failed")] if d[FAILED] is not None else []
        found += [
            (r[STARTED], f"rollback {_named(r)} started")
            for r in self.rolled_back_by.get(d[KEY], ())
        ]
        incidents = [i for i, _ in self.attributed.get(d[KEY], ())]
        found += [(i.opened_at.timestamp(), f"incident {i.id} opened") for i in incidents]
        detected, detected_by = min(found or [(d[FINISHED], "the deployment ended failed")])
        restored, by, restorer = self._restore(d[SERVICE], d[ENV], detected, d)
        return _resolved(
            _Episode(_named(d), d[SERVICE], detected, detected_by, restored, by, restorer, d[KEY]),
            incidents,
            "its incidents resolved",
        )

    def incidents_episode(self, group: list[IncidentFact]) -> _Episode:
        first, ids = group[0], "+".join(i.id for i in group)
        envs = {i.environment for i in group}
        env = first.environment if len(envs) == 1 else None
        detected = first.opened_at.timestamp()
        restored, by, restorer = self._restore(first.service, env, detected)
        refs = "+".join(i.ref or i.id for i in group)
        episode = _Episode(
            ids, first.service, detected, f"incident {ids} opened", restored, by, restorer, refs
        )
        return _resolved(episode, group, f"incident {ids} resolved")

    def run(
        self,
        days: list[float],
        first: int,
        tally: Tally,
        items: Items | None,
    ) -> None:
        """One pass in finish order: commit bookkeeping for every deployment, tallies for those
        that finished in the span, a recovery sample for each failure detected in it."""
        lo, hi = days[0], days[-1]
        commits, slices = self.commits, _slices(self.commits)
        # Per service deployed to several environments: when each commit was last brought.
        seen: dict[str, dict[str, float]] = {s: {} for s in self.shared}
        succeeded_in: set[tuple[str, str]] = set()
        right, nothing = bisect.bisect_right, (0, 0)
        leads_by_day, batches, deploys = tally.leads, tally.batches, tally.deploys
        for d in self.deps:
            fin, kind, ok = d[FINISHED], d[KIND], d[RESULT] == "succeeded"
            day = right(days, fin) - 1 if lo <= fin < hi else -1
            mine = items if items is not None and day >= first else None
            if day >= 0:
                tally.envs[day].add(d[ENV])
                tally.services[day].add(d[SERVICE])
            episode = self.episodes.get(d[KEY])
            why = self.failure(d) if episode is not None else []
            if episode is not None:
                self._sample(episode, days, first, tally.recoveries, tally.unrestored, items)
            if kind == "deploy" and ok:
                pair = (d[SERVICE], d[ENV])
                is_first = pair not in succeeded_in
                if is_first:
                    succeeded_in.add(pair)
                a, b = slices.get(d[RID], nothing)
                mine_commits = commits[a:b]
                known = seen.get(d[SERVICE])
                shas = [c[2] for c in mine_commits] if known is not None else ()
                if day < 0:
                    if known is not None:
                        known.update({sha: fin for sha in shas})
                    continue
                if is_first or mine is not None or (known and not known.keys().isdisjoint(shas)):
                    ts = self._counted(d, mine_commits, is_first, known or {}, mine)
                else:
                    ts = [c[1] for c in mine_commits]
                if known is not None:
                    known.update({sha: fin for sha in shas})
                leads = [fin - t if t < fin else 0.0 for t in ts]
                leads_by_day[day] += leads
                batches[day].append(len(leads))
                deploys[day] += 1
                if mine is not None:
                    how = f"{len(leads)} of its {len(mine_commits)} commits counted"
                    mine["batch_size"].append(
                        _item("deployment", _named(d), d[SERVICE], fin, None, how, d[KEY])
                    )
                if leads:
                    _split(d, ts, tally.stages[day])
            elif day < 0:
                continue
            if d[SERVED] is None:  # stopped by its checks before taking traffic
                tally.caught[day] += 1
                if mine is not None:
                    _caught(d, mine)
                continue
            unplanned = self._unplanned(d)
            tally.rework_total[day] += 1
            tally.rework_unplanned[day] += bool(unplanned)
            if kind == "deploy":
                tally.cfr_total[day] += 1
                tally.cfr_failed[day] += bool(why)
            if mine is not None:
                _explain(d, why, unplanned, mine)
        for ep in self.standalone:
            recoveries, unrestored = tally.incident_recoveries, tally.incident_unrestored
            self._sample(ep, days, first, recoveries, unrestored, items, "incident_recovery")
        if items is not None:
            items["change_failure_rate"] += self.incident_items

    def _counted(
        self,
        d: Row,
        commits: Sequence[Commit],
        is_first: bool,
        known: Mapping[str, float],
        mine: Items | None,
    ) -> list[float]:
        """The start times of ``d``'s commits that count: not brought by another deployment of
        the service within the look-back before, and for a first deployment, not older than the
        look-back. (Both bounded by the look-back: a day's figures never depend on how far
        back the report reads.)"""
        keep = []
        look_back = self.s.look_back.total_seconds()
        oldest = d[FINISHED] - look_back
        for _, time, sha in commits:
            if known.get(sha, -math.inf) >= oldest:
                how = "excluded: an earlier deployment of the service brought it"
            elif is_first and time < oldest:
                how = (
                    f"excluded: older than the {fmt_duration(look_back)} look-back of the "
                    "first deployment to this environment"
                )
            else:
                keep.append(time)
                how = "counted"
                if time > d[FINISHED]:
                    how += (
                        f"; skew: dated {fmt_duration(time - d[FINISHED])} after its deployment "
                        "ended (a clock or a rewritten date), so its lead time is taken as 0s"
                    )
            if mine is not None:
                lead = max(0.0, d[FINISHED] - time)
                mine["lead_time"].append(
                    _item("commit", sha, d[SERVICE], time, lead, how)
                    | {"deployment": _named(d), "deployment_ref": d[KEY]}
                )
        return keep

    def _unplanned(self, d: Row) -> str:
        """Why ``d`` was an unplanned deployment made because of a production failure (empty:
        it was planned): a rollback, one marked as fixing an incident, or the deployment that
        restored service after a failure was known (a fix-forward)."""
        if d[KIND] == "rollback":
            return (
                f"rollback of {label(d[ROLLBACK_OF]) if d[ROLLBACK_OF] else 'an earlier release'}"
            )
        if d[FIXES]:
            return "marked as fixing an incident"
        fixed = self.fixes.get(d[KEY])
        return f"fix-forward: restored service after failure {fixed}" if fixed else ""

    def _sample(
        self,
        ep: _Episode,
        days: list[float],
        first: int,
        recoveries: list[Any],
        unrestored: list[int],
        items: Items | None,
        figure: str = "recovery_time",
    ) -> None:
        if not days[0] <= ep.detected < days[-1]:
            return
        day = bisect.bisect_right(days, ep.detected) - 1
        value = None if ep.restored is None else max(0.0, ep.restored - ep.detected)
        if value is None:
            unrestored[day] += 1
        else:
            recoveries[day].append(value)
        if items is not None and day >= first:
            restored = (
                f"restored: {ep.restored_by} at {iso(ep.restored)}"
                if value is not None
                else "not restored yet (left out of the median)"
            )
            items[figure].append(
                _item(
                    "failure" if figure == "recovery_time" else "incident",
                    ep.id,
                    ep.service,
                    ep.detected,
                    value,
                    f"detected: {ep.detected_by}; {restored}",
                    ep.ref,
                )
            )


def _slices(commits: Sequence[Commit]) -> dict[int, tuple[int, int]]:
    """Where each deployment's commits are in ``commits`` (ordered by deployment): counted in C,
    then one step per deployment rather than per commit."""
    slices, start = {}, 0
    for rid, n in Counter(map(itemgetter(0), commits)).items():
        slices[rid] = (start, start + n)
        start += n
    return slices


_SAME_MOMENT = 0.001


def _resolved(ep: _Episode, incidents: Sequence[IncidentFact], why: str) -> _Episode:
    """Restored when all ``incidents`` are resolved, if that comes first. Within a millisecond
    the deployment that restored service keeps the credit: the database and Python turn one
    moment into epoch seconds by different roundings."""
    ends = [_ts(i.resolved_at) for i in incidents]
    if ends and None not in ends:
        last = max(e for e in ends if e is not None)
        if ep.restored is None or last < ep.restored - _SAME_MOMENT:
            return replace(ep, restored=last, restored_by=why, restorer=None)
    return ep


def _groups(incidents: Sequence[IncidentFact]) -> list[list[IncidentFact]]:
    """Unattributed incidents of a service that overlap in time, together: two alerts in one
    outage are one recovery, not two."""
    groups: list[list[IncidentFact]] = []
    end: float | None = 0.0
    for inc in sorted(incidents, key=lambda i: (i.service, i.opened_at, i.id)):
        opened, resolved = inc.opened_at.timestamp(), _ts(inc.resolved_at)
        if groups and groups[-1][0].service == inc.service and (end is None or opened < end):
            groups[-1].append(inc)
            end = None if end is None or resolved is None else max(end, resolved)
        else:
            groups.append([inc])
            end = resolved
    return groups


_STAGE = {name: i for i, name in enumerate(SPLIT)}


def _split(d: Row, ts: Sequence[float], stages: list[float]) -> None:
    """Add the value-stream split of ``d``'s counted commits: each stretch between two known
    points goes to the stage ending at the later one, so a commit's split adds up to its lead
    time. Without any stage point its whole lead time is "unsplit"."""
    fin = d[FINISHED]
    points = [(min(p, fin), ENDS[i]) for i, p in enumerate(_points(d[STAGES])) if p is not None]
    if not points:
        stages[_STAGE["unsplit"]] += sum(fin - t if t < fin else 0.0 for t in ts)
        return
    points.append((fin, "production"))
    for i in range(1, len(points)):  # a point never precedes the one before it
        points[i] = (max(points[i][0], points[i - 1][0]), points[i][1])
    if max(ts) <= points[0][0]:  # the usual case: every commit is older than the run
        stages[_STAGE[points[0][1]]] += len(ts) * points[0][0] - sum(ts)
        for (p0, _), (p1, stage) in pairwise(points):
            stages[_STAGE[stage]] += len(ts) * (p1 - p0)
        return
    for t in ts:  # a commit newer than the first point (clock skew, first-seen times)
        prev = start = min(t, fin)
        for p, stage in points:
            end = max(p, start)
            stages[_STAGE[stage]] += end - prev
            prev = end


def _points(value: Any) -> Sequence[float | None]:
    """The five stage points of a row: already a tuple (from facts), or the stored JSON of RFC
    3339 strings, a dict (PostgreSQL) or its text (SQLite). Text is cut at its quotes rather
    than parsed as JSON: it is read for every deployment of the window."""
    if isinstance(value, tuple):
        return value
    out: list[float | None] = [None] * 5
    if value is None:  # not read (load.py reads them only for the window's deployments)
        return out
    if isinstance(value, str):
        parts = value.split('"')
        if len(parts) % 4 != 1:  # not only strings: take the long way
            value = json.loads(value)
        else:
            for name, text in zip(parts[1::4], parts[3::4], strict=True):
                at = _POINT.get(name)
                if at is not None:
                    out[at] = _read(text).timestamp()
            return out
    for name, text in value.items():
        at = _POINT.get(name)
        if at is not None and text:
            out[at] = _read(text).timestamp()
    return out


_POINT = {name: i for i, name in enumerate(STAGE_POINTS)}
_read = dt.datetime.fromisoformat


def _item(
    kind: str,
    id_: str,
    service: str,
    time: float | None,
    value: float | None,
    how: str,
    ref: str | None = None,
) -> dict[str, Any]:
    """One line of --explain. ``id`` names it as people know it (an imported record by its own
    id); ``ref`` is what the UI links to (a deployment's fact key, incidents' record numbers)."""
    item = {
        "kind": kind,
        "id": id_,
        "service": service,
        "time": iso(time),
        "value": rounded(value),
        "how": how,
    }
    if ref is not None:
        item["ref"] = ref
    return item


def _named(d: Row) -> str:
    return label(d[KEY])


def _caught(d: Row, mine: Items) -> None:
    """Explain a deployment stopped by its checks before it took traffic: in the frequency
    (not counted) and in the CFR (left out of it: it never served users)."""
    how = "excluded: caught before production traffic (stopped by its checks, never served)"
    for name in ("deployment_frequency", "change_failure_rate", "rework_rate"):
        mine[name].append(
            _item("deployment", _named(d), d[SERVICE], d[FINISHED], None, how, d[KEY])
        )
    why = f"caught: {d[RESULT].replace('_', ' ')} before it took traffic"
    mine["caught_before_traffic"].append(
        _item("deployment", _named(d), d[SERVICE], d[FINISHED], None, why, d[KEY])
    )


def _explain(d: Row, why: list[str], unplanned: str, mine: Items) -> None:
    key, service, fin = _named(d), d[SERVICE], d[FINISHED]
    rollback = d[KIND] == "rollback"
    df = (
        "counted"
        if not rollback and d[RESULT] == "succeeded"
        else ("excluded: rollback" if rollback else f"excluded: {d[RESULT].replace('_', ' ')}")
    )
    cfr = "excluded: rollback" if rollback else ("failed: " + "; ".join(why) if why else "ok")
    rework = f"unplanned: {unplanned}" if unplanned else "planned"
    for name, how in (
        ("deployment_frequency", df),
        ("change_failure_rate", cfr),
        ("rework_rate", rework),
    ):
        mine[name].append(_item("deployment", key, service, fin, None, how, d[KEY]))
