"""What an import will write, decided against the store before anything is written: which
records are new (existing keys are looked up in chunks), what each rollback undoes, which
changes each successful deployment brings, whom each incident is attributed to. Commit
ranges from a repository are computed last, outside any transaction (compute_ranges).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from conveyor.errors import ConveyorError
from conveyor.facts import Change
from conveyor.metrics.import_records import DeploymentRecord, Errors, IncidentRecord, Parsed
from conveyor.metrics.ranges import commit_range
from conveyor.store.models import Deployment, DeploymentFactRow, Incident, Service

# Keys looked up per query.
CHUNK = 900
_CONVEYOR_DEPLOYMENT = re.compile(r"^c?([0-9]{1,18})$")

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def lookup(
    session: Session,
    key: InstrumentedAttribute[K],
    value: InstrumentedAttribute[V],
    keys: Sequence[K],
) -> dict[K, V]:
    """``{key: value}`` of the rows whose ``key`` is one of ``keys``: a file may name far more
    keys than one statement should carry, so they go CHUNK to a query."""
    found: dict[K, V] = {}
    for chunk in chunks(keys):
        rows = session.execute(select(key, value).where(key.in_(chunk)))
        found.update((k, v) for k, v in rows)  # a Result has keys(): not a mapping to update
    return found


@dataclass
class ImportSummary:
    records: int = 0
    deployments_added: int = 0
    deployments_present: int = 0
    changes_added: int = 0
    incidents_added: int = 0
    incidents_present: int = 0
    incidents_resolved: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "dry_run": self.dry_run,
            "deployments": {
                "added": self.deployments_added,
                "present": self.deployments_present,
                "changes_added": self.changes_added,
            },
            "incidents": {
                "added": self.incidents_added,
                "present": self.incidents_present,
                "resolved": self.incidents_resolved,
            },
            "ignored": dict(self.ignored),
            "duplicates": self.duplicates,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _StoredIncident:
    id: int
    status: str
    resolved_at: dt.datetime | None


@dataclass
class Known:
    """What the store already holds of a file's records."""

    fact_keys: set[str] = field(default_factory=set)
    incidents: dict[str, _StoredIncident] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, parsed: Parsed) -> Known:
        known = cls()
        keys = [d.key for d in parsed.deployments]
        for chunk in chunks(keys):
            known.fact_keys.update(
                session.scalars(
                    select(DeploymentFactRow.key).where(DeploymentFactRow.key.in_(chunk))
                )
            )
        external = [i.external_id for i in parsed.incidents.values()]
        for chunk in chunks(external):
            for row in session.execute(
                select(Incident.external_id, Incident.id, Incident.status, Incident.resolved_at)
                .where(Incident.external_id.in_(chunk))
                .order_by(Incident.id)
            ):
                if row.external_id not in known.incidents:
                    known.incidents[row.external_id] = _StoredIncident(
                        row.id, row.status, row.resolved_at
                    )
        return known


@dataclass
class Plan:
    parsed: Parsed
    deployments: list[DeploymentRecord]  # new ones
    incidents: list[IncidentRecord]  # new ones
    resolutions: list[tuple[int, dt.datetime]]  # (incident row id, resolved_at)
    present_deployments: int
    present_incidents: int
    warnings: list[str]

    def summary(self, *, dry_run: bool) -> ImportSummary:
        return ImportSummary(
            records=self.parsed.records,
            deployments_added=len(self.deployments),
            deployments_present=self.present_deployments,
            changes_added=sum(len(d.changes) for d in self.deployments),
            incidents_added=len(self.incidents),
            incidents_present=self.present_incidents,
            incidents_resolved=len(self.resolutions),
            ignored=dict(self.parsed.ignored),
            duplicates=self.parsed.duplicates,
            warnings=list(self.warnings),
            dry_run=dry_run,
        )


def _groups(records: Iterable[DeploymentRecord]) -> dict[tuple[str, str], list[DeploymentRecord]]:
    groups: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for rec in records:
        groups.setdefault((rec.service, rec.environment), []).append(rec)
    for group in groups.values():
        group.sort(key=lambda r: r.order)
    return groups


def _stored_facts(
    session: Session, service: str, environment: str, *, successes_only: bool
) -> list[tuple[dt.datetime, str, str]]:
    """(finished_at, key, sha) of the stored deployment facts of one environment, oldest first."""
    query = select(
        DeploymentFactRow.finished_at, DeploymentFactRow.key, DeploymentFactRow.sha
    ).where(
        DeploymentFactRow.service == service,
        DeploymentFactRow.environment == environment,
        DeploymentFactRow.kind == "deploy",
    )
    if successes_only:
        query = query.where(DeploymentFactRow.result == "succeeded")
    rows = session.execute(query.order_by(DeploymentFactRow.finished_at, DeploymentFactRow.id))
    return [(r.finished_at, r.key, r.sha) for r in rows]


def _infer_rollbacks(
    session: Session, groups: dict[tuple[str, str], list[DeploymentRecord]]
) -> None:
    """A CDEvents service.rolledback undoes the deployment before it in its environment: it
    gets that deployment as ``rollback_of``; when that deployment came from a CDEvent of this
    file too (it has no status of its own), it becomes ``rolled_back`` (failed when it ended)."""
    for (service, environment), group in groups.items():
        todo = [r for r in group if r.cdevent and r.kind == "rollback" and r.rollback_of is None]
        if not todo:
            continue
        stored = _stored_facts(session, service, environment, successes_only=False)
        file_keys = {r.key for r in group}
        stored = [s for s in stored if s[1] not in file_keys]
        stored_times = [s[0] for s in stored]
        deploys = [r for r in group if r.kind == "deploy"]
        deploy_orders = [r.order for r in deploys]
        for rec in todo:
            before = bisect.bisect_left(deploy_orders, rec.order) - 1
            candidate = deploys[before] if before >= 0 else None
            index = bisect.bisect_left(stored_times, rec.finished_at) - 1
            from_store = stored[index] if index >= 0 else None
            if candidate is not None and (
                from_store is None or candidate.finished_at >= from_store[0]
            ):
                rec.rollback_of = candidate.key
                if candidate.cdevent and candidate.result == "succeeded" and not candidate.present:
                    candidate.result, candidate.failed_at = "rolled_back", candidate.finished_at
            elif from_store is not None:
                rec.rollback_of = from_store[1]


def _carry_changes(groups: dict[tuple[str, str], list[DeploymentRecord]]) -> None:
    """Changes are recorded on successful deployments only (as for Conveyor's own): the commits
    listed on a failed or rolled back deployment go to the next successful deployment of the
    same environment in the file (unless it lists them itself). A successful deployment with a
    repository gets its range computed from git instead."""
    for group in groups.values():
        pending: dict[str, Change] = {}
        for rec in group:
            if rec.kind == "rollback":
                continue
            if rec.result != "succeeded":
                for change in rec.commits or ():
                    pending.setdefault(change.sha, change)
                continue
            if rec.repository is not None:
                rec.needs_range = True
            else:
                own = list(rec.commits or ())
                shas = {c.sha for c in own}
                rec.changes = own + [c for sha, c in pending.items() if sha not in shas]
            pending.clear()


def _resolve_attribution(
    session: Session, parsed: Parsed, incidents: list[IncidentRecord], errors: Errors
) -> None:
    """An incident's ``deployment``: a deployment of the same service in this file or imported
    before (its fact key), else Conveyor's own deployment (its id, or c<id>). A CDEvent
    incident without one is attributed to the latest deployment of the file of the same
    service and artifact that ended before the incident opened and served users, if any."""
    file_deployments = {d.key: d for d in parsed.deployments}
    wanted = [
        f"i:{i.service}:{i.deployment}"
        for i in incidents
        if i.deployment and f"i:{i.service}:{i.deployment}" not in file_deployments
    ]
    # fact key -> environment
    stored = lookup(session, DeploymentFactRow.key, DeploymentFactRow.environment, wanted)
    numbers = {
        int(m.group(1))
        for i in incidents
        if i.deployment and (m := _CONVEYOR_DEPLOYMENT.match(i.deployment))
    }
    own: dict[int, tuple[str, int, str]] = {}
    for id_chunk in chunks(sorted(numbers)):
        for row in session.execute(
            select(Deployment.id, Service.name, Deployment.release_id, Deployment.environment)
            .join(Service, Service.id == Deployment.service_id)
            .where(Deployment.id.in_(id_chunk))
        ):
            own[row.id] = (row.name, row.release_id, row.environment)
    by_artifact: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for d in parsed.deployments:
        if d.artifact and d.kind == "deploy":
            by_artifact.setdefault((d.service, d.artifact), []).append(d)
    for inc in incidents:
        if inc.deployment:
            key = f"i:{inc.service}:{inc.deployment}"
            if key in file_deployments or key in stored:
                inc.deployment_key = key
                dep = file_deployments.get(key)
                inc.environment = inc.environment or (
                    dep.environment if dep is not None else stored[key]
                )
                continue
            m = _CONVEYOR_DEPLOYMENT.match(inc.deployment)
            number = int(m.group(1)) if m else None
            if number is not None and number in own and own[number][0] == inc.service:
                inc.deployment_key = f"c{number}"
                inc.deployment_id, inc.release_id = number, own[number][1]
                inc.environment = inc.environment or own[number][2]
                continue
            errors.add(
                inc.where.error(
                    "customData.deployment" if inc.cdevent else "deployment",
                    f"no deployment {inc.deployment!r} of {inc.service} in this file, in "
                    "earlier imports or among Conveyor's deployments",
                )
            )
        elif inc.artifact and inc.opened_at is not None:
            matches = [
                d
                for d in by_artifact.get((inc.service, inc.artifact), ())
                if d.finished_at <= inc.opened_at and d.served_at is not None
            ]
            if matches:
                dep = max(matches, key=lambda d: d.order)
                inc.deployment_key = dep.key
                inc.environment = inc.environment or dep.environment


def plan(session: Session, parsed: Parsed, base: Path | None) -> Plan:
    """Decide what to write: which records are new, what the rollbacks undo, which changes
    each successful deployment brings, whom each incident is attributed to. Commit ranges from
    a repository are computed afterwards (compute_ranges), outside any transaction."""
    known = Known.load(session, parsed)
    errors = Errors()
    for rec in parsed.deployments:
        rec.present = rec.key in known.fact_keys
    groups = _groups(parsed.deployments)
    _infer_rollbacks(session, groups)
    _carry_changes(groups)
    new_incidents: list[IncidentRecord] = []
    resolutions: list[tuple[int, dt.datetime]] = []
    present_incidents = 0
    warnings: list[str] = []
    for inc in parsed.incidents.values():
        stored = known.incidents.get(inc.external_id)
        if stored is not None:
            present_incidents += 1
            if stored.status == "open" and inc.resolved_at is not None:
                resolutions.append((stored.id, inc.resolved_at))
        elif inc.opened_at is not None:
            new_incidents.append(inc)
        else:
            warnings.append(
                f"line {inc.resolved_line or inc.line}: incident {inc.id!r} of {inc.service} "
                "was resolved but never detected (neither in this file nor imported before): "
                "skipped"
            )
    if parsed.records == 0:
        warnings.append("the file holds no records (only blank lines and # comments)")
    _resolve_attribution(session, parsed, new_incidents, errors)
    for rec in parsed.deployments:
        if rec.needs_range and not rec.present:
            _check_repository(rec, base, errors)
    errors.raise_if_any()
    _previous_successes(session, groups)
    new = [d for d in parsed.deployments if not d.present]
    return Plan(
        parsed=parsed,
        deployments=new,
        incidents=new_incidents,
        resolutions=resolutions,
        present_deployments=len(parsed.deployments) - len(new),
        present_incidents=present_incidents,
        warnings=warnings,
    )


def _check_repository(rec: DeploymentRecord, base: Path | None, errors: Errors) -> None:
    assert rec.repository is not None
    path = Path(rec.repository)
    if not path.is_absolute():
        if base is None:
            errors.add(
                rec.where.error(
                    "repository",
                    f"{rec.repository!r} is relative: through the API, give an absolute path "
                    "on the server",
                )
            )
            return
        path = base / path
    if not path.is_dir():
        errors.add(rec.where.error("repository", f"{str(path)!r} is not a directory"))
        return
    rec.repository = str(path)


def _previous_successes(
    session: Session, groups: dict[tuple[str, str], list[DeploymentRecord]]
) -> None:
    """For each new successful deployment with a repository: the commit of the previous
    successful deployment of its environment, in the file or the store (by finished_at; one
    of the file comes after a stored one finished at the same time)."""
    for (service, environment), group in groups.items():
        todo = [r for r in group if r.needs_range and not r.present]
        if not todo:
            continue
        file_keys = {r.key for r in group}
        successes = [
            (finished, -1, sha)
            for finished, key, sha in _stored_facts(
                session, service, environment, successes_only=True
            )
            if key not in file_keys and sha
        ]
        successes += [
            (r.finished_at, r.line, r.sha)
            for r in group
            if r.kind == "deploy" and r.result == "succeeded" and r.sha
        ]
        successes.sort()
        orders = [(s[0], s[1]) for s in successes]
        for rec in todo:
            index = bisect.bisect_left(orders, rec.order) - 1
            rec.previous = successes[index][2] if index >= 0 else None


def compute_ranges(records: Iterable[DeploymentRecord]) -> None:
    """git rev-list NEW ^PREVIOUS for each deployment that needs it; errors name the line."""
    errors = Errors()
    for rec in records:
        if not rec.needs_range or rec.present:
            continue
        assert rec.repository is not None
        try:
            rec.changes = commit_range(Path(rec.repository), rec.sha, rec.previous)
        except ConveyorError as exc:
            errors.add(rec.where.error("repository", exc.message))
            if errors.full:
                break
    errors.raise_if_any()
