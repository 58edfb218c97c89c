"""History import: deployments and incidents from tools Conveyor did not run, as JSON Lines.

One record per line: native records (``"kind": "deployment"`` or ``"incident"``) or CDEvents
(``service.deployed|upgraded|rolledback``, ``incident.detected|reported|resolved``), bare or
wrapped in a CloudEvent. docs/import.md describes the formats; the rules that matter here:

- **All or nothing.** Every line is parsed and checked, every reference resolved and every
  commit range computed before anything is written; then everything is written in one
  transaction. Any bad line: nothing is stored, and each error names its line and field.
- **Idempotent.** A deployment becomes the fact ``i:<service>:<id>``, an incident the incident
  with external id ``<service>:<id>``; what already exists is left alone (only an imported
  incident that was open may be resolved by a later import). Importing a file twice changes
  nothing, and emits no event the second time.
- **Fast.** Existing keys are looked up in chunks and rows are inserted in batches.

The work is split by step: metrics.import_records (the values and native records, checked
line by line), metrics.import_cdevents (CDEvents mapped onto those), metrics.import_plan
(what to write, decided against the store); this module reads a file's lines and writes the
plan in one transaction.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError

from conveyor import jsonio
from conveyor.events import EventType
from conveyor.metrics.import_cdevents import parse_cdevent, unwrap
from conveyor.metrics.import_plan import (
    ImportSummary,
    Known,
    Plan,
    chunks,
    compute_ranges,
    lookup,
    plan,
)
from conveyor.metrics.import_records import (
    Errors,
    ImportFailed,
    LineError,
    Parsed,
    Where,
    native_deployment,
    native_incident,
    show,
)
from conveyor.store.db import Store, Writer
from conveyor.store.marks import earliest, mark
from conveyor.store.models import (
    Base,
    ChangeFactRow,
    DeploymentFactRow,
    Incident,
    Service,
    utcnow,
)

__all__ = ["ImportFailed", "ImportSummary", "decode", "import_history", "lines", "parse"]

SOURCE = "import"
# Rows inserted per statement.
INSERT_BATCH = 5000
# Serialises imports on PostgreSQL (SQLite's BEGIN IMMEDIATE already does).
IMPORT_LOCK = 7263005
# Rows written from which an import refreshes PostgreSQL's statistics of the fact tables.
ANALYZE_AFTER = 1000
# Where an imported service's repository is, when the import had to create the service (an
# incident needs a service row): not fetchable; `conveyor service add` sets the real one.
IMPORTED_REPOSITORY = "imported://"


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); bad bytes name their line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFailed([f"line {line}: not UTF-8 text ({exc.reason})"]) from None


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, content) of each line that holds a record: blank lines and # comments skipped."""
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def parse(text: str) -> Parsed:
    """Parse and check every line; raise ImportFailed with the errors of the bad ones."""
    parsed = Parsed()
    errors = Errors()
    for number, content in lines(text):
        if errors.full:
            break
        parsed.records += 1
        where = Where(number)
        try:
            obj = jsonio.loads(content)
        except json.JSONDecodeError as exc:
            errors.add(where.error(None, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except jsonio.TooDeep as exc:
            errors.add(where.error(None, f"not accepted: {exc}"))
            continue
        if not isinstance(obj, dict):
            errors.add(where.error(None, "a record must be a JSON object"))
            continue
        try:
            _parse_record(obj, where, parsed, errors)
        except LineError as exc:
            errors.add(str(exc))
    errors.raise_if_any()
    return parsed


def _parse_record(obj: dict[str, Any], where: Where, parsed: Parsed, errors: Errors) -> None:
    kind = obj.get("kind")
    if kind == "deployment":
        rec = native_deployment(obj, where, errors)
        if rec is not None:
            parsed.add_deployment(rec)
        return
    if kind == "incident":
        inc = native_incident(obj, where, errors)
        if inc is not None:
            key = (inc.service, inc.id)
            if key in parsed.incidents:
                raise LineError(
                    where.error(
                        "id",
                        f"incident {inc.id!r} of {inc.service} is already on line "
                        f"{parsed.incidents[key].line}",
                    )
                )
            parsed.incidents[key] = inc
        return
    cdevent = unwrap(obj, where)
    if cdevent is not None:
        parse_cdevent(*cdevent, parsed, errors)
        return
    if "kind" in obj:
        raise LineError(
            where.error("kind", f"{show(kind)} is not a record kind: use deployment or incident")
        )
    raise LineError(
        where.error(
            "kind",
            'missing: a record is {"kind": "deployment", ...}, {"kind": "incident", ...} or a '
            "CDEvent (context.type dev.cdevents.*)",
        )
    )


# --- writing ----------------------------------------------------------------------------------


def _write(w: Writer, work: Plan, actor: str | None, origin: str) -> ImportSummary:
    session = w.session
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK})
    # Another import may have written some of these since they were planned.
    known = Known.load(session, work.parsed)
    deployments = [d for d in work.deployments if d.key not in known.fact_keys]
    incidents = [i for i in work.incidents if i.external_id not in known.incidents]
    for records in chunks(deployments, INSERT_BATCH):
        rows: list[dict[str, Any]] = [
            {
                "key": d.key,
                "source": SOURCE,
                "service": d.service,
                "environment": d.environment,
                "tier": d.tier,
                "kind": d.kind,
                "result": d.result,
                "sha": d.sha,
                "started_at": d.started_at,
                "finished_at": d.finished_at,
                "failed_at": d.failed_at,
                "rollback_of": d.rollback_of,
                "fixes_incident": d.fixes_incident,
                "stages": {},
                "deployment_id": None,
                "served_at": d.served_at,
            }
            for d in records
        ]
        # Core executemany: the ORM's bulk insert with RETURNING is many times slower here.
        session.execute(insert(_table(DeploymentFactRow)), rows)
    ids = lookup(session, DeploymentFactRow.key, DeploymentFactRow.id, [d.key for d in deployments])
    # Rows without author date leave out its column (and seen_at, unknown for imports): half
    # as many values to convert, the insert's largest cost.
    dated: list[dict[str, Any]] = []
    undated: list[dict[str, Any]] = []
    for d in deployments:
        fact_id = ids[d.key]
        for c in d.changes:
            if c.authored_at is None:
                undated.append({"fact_id": fact_id, "sha": c.sha, "committed_at": c.committed_at})
            else:
                dated.append(
                    {
                        "fact_id": fact_id,
                        "sha": c.sha,
                        "committed_at": c.committed_at,
                        "authored_at": c.authored_at,
                    }
                )
    for rows_of_kind in (undated, dated):
        for change_rows in chunks(rows_of_kind, INSERT_BATCH):
            session.execute(insert(_table(ChangeFactRow)), list(change_rows))
    changes = len(undated) + len(dated)
    service_ids = _services(w, sorted({i.service for i in incidents}))
    incident_rows: list[dict[str, Any]] = [
        {
            "service_id": service_ids[i.service],
            "environment": i.environment,
            "status": "resolved" if i.resolved_at else "open",
            "title": i.title or f"imported incident {i.id}",
            "source": SOURCE,
            "deployment_id": i.deployment_id,
            "release_id": i.release_id,
            "fingerprint": None,
            "external_id": i.external_id,
            "opened_at": i.opened_at,
            "resolved_at": i.resolved_at,
            "resolved_by": SOURCE if i.resolved_at else None,
            "data": {},
            "deployment_key": i.deployment_key,
        }
        for i in incidents
    ]
    for incident_batch in chunks(incident_rows, INSERT_BATCH):
        session.execute(insert(_table(Incident)), list(incident_batch))
    changed: dict[str, dt.datetime] = {}
    for d in deployments:
        earliest(changed, d.service, min(d.started_at, d.finished_at))
    named = [i.deployment_key for i in incidents if i.deployment_key]
    started = lookup(session, DeploymentFactRow.key, DeploymentFactRow.started_at, named)
    for i in incidents:
        named_start = started.get(i.deployment_key or "")
        earliest(changed, i.service, min(filter(None, [i.opened_at, named_start]), default=None))
    mark(session, changed)
    resolved = 0
    for row_id, resolved_at in work.resolutions:
        incident = session.get(Incident, row_id)
        if incident is not None and incident.status == "open":
            incident.status, incident.resolved_at, incident.resolved_by = (
                "resolved",
                resolved_at,
                SOURCE,
            )
            resolved += 1
    summary = work.summary(dry_run=False)
    summary.deployments_added = len(deployments)
    summary.deployments_present = len(work.parsed.deployments) - len(deployments)
    summary.changes_added = changes
    summary.incidents_added = len(incidents)
    summary.incidents_present = work.present_incidents + len(work.incidents) - len(incidents)
    summary.incidents_resolved = resolved
    if deployments or incidents or resolved:
        w.emit(
            EventType.HISTORY_IMPORTED,
            actor=actor,
            origin=origin,
            deployments=len(deployments),
            changes=changes,
            incidents=len(incidents),
            resolved=resolved,
        )
    if postgres and len(deployments) + len(incidents) >= ANALYZE_AFTER:
        # Fresh statistics, and PostgreSQL drops the plans it cached for these tables: a plan
        # made while they were nearly empty (a sequential scan per key lookup) would make the
        # next import of this size take minutes instead of seconds.
        session.execute(sql("ANALYZE deployment_facts, change_facts, incidents"))
    return summary


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


def _services(w: Writer, names: Sequence[str]) -> dict[str, int]:
    """The ids of these services, registering those not known yet (an incident needs one)."""
    found = lookup(w.session, Service.name, Service.id, names)
    for name in names:
        if name not in found:
            repository = IMPORTED_REPOSITORY + name
            service = Service(name=name, repository=repository, created_at=utcnow())
            w.session.add(service)
            w.session.flush()
            w.emit(EventType.SERVICE_REGISTERED, service=name, repository=repository, by="import")
            found[name] = service.id
    return found


def import_history(
    store: Store,
    text: str,
    *,
    base: Path | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    origin: str = "",
) -> ImportSummary:
    """Import a JSON Lines history; all or nothing. ``base`` resolves relative repository
    paths (None: they are refused). With ``dry_run`` everything is checked (commit ranges
    included) and the summary says what would be written; nothing is."""
    started = time.perf_counter()
    with _collector_paused():
        parsed = parse(text)
        with store.session() as session:
            work = plan(session, parsed, base)
        compute_ranges(work.deployments)
        nothing = not (work.deployments or work.incidents or work.resolutions)
        if dry_run or nothing:
            summary = work.summary(dry_run=dry_run)
        else:
            try:
                with store.write() as w:
                    summary = _write(w, work, actor, origin)
            except IntegrityError:
                raise ImportFailed(
                    ["another import wrote some of the same deployments at the same time"],
                    hint="nothing from this file was imported; import it again",
                ) from None
    summary.seconds = time.perf_counter() - started
    return summary


class _Collector:
    """Pauses Python's cyclic garbage collector while imports run: a large file makes hundreds
    of thousands of objects that live until the import ends, and the collector would scan
    them again and again (about 40 % of the parsing time). Reference counting still frees
    everything; the collector resumes when the last concurrent import ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.was_enabled = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0 and self.was_enabled:
                    gc.enable()


_collector_paused = _Collector().paused
