"""One sync of a connector: read its token (a secret only it can read), pull from its cursor,
import what it found through the history import (metrics.imports: all or nothing,
idempotent by id), and only then move its cursor on. A failed pull or import stores nothing,
keeps the cursor, and is recorded with its error for `conveyor connectors list`.

The server runs every connector of the connectors file when it is due (``sync_due``, a
periodic service); `conveyor connectors sync NAME` runs one now.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from conveyor import jsonio
from conveyor.connectors.base import ConnectorError
from conveyor.connectors.config import Configured, connectors_file, load
from conveyor.errors import ConveyorError, NotFound
from conveyor.metrics.imports import ImportFailed, import_history
from conveyor.store import vault
from conveyor.store.db import Store
from conveyor.store.models import ConnectorState, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

log = logging.getLogger("conveyor.connectors")
# How often the server looks for connectors that are due (each has its own `every`).
CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class Synced:
    name: str
    pulled: int
    skipped: int
    requests: int
    imported: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector": self.name,
            "pulled": self.pulled,
            "skipped": self.skipped,
            "requests": self.requests,
            "import": self.imported,
        }


def configured(store: Store, path: Path | None = None) -> dict[str, Configured]:
    """The connectors of the file at ``path`` (CONVEYOR_CONNECTORS_FILE), else of
    connectors.yml in the data directory."""
    return load(connectors_file(store.home, path))


def sync(store: Store, connector: Configured) -> Synced:
    """Pull and import once; raises ConveyorError (recorded on the connector) if it fails."""
    started = utcnow()
    try:
        done = _sync(store, connector)
    except ConveyorError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        _record(store, connector.name, tried_at=started, error=message)
        raise
    return done


def _sync(store: Store, connector: Configured) -> Synced:
    name, options = connector.name, connector.options
    token = None
    if options.token_secret:
        token = vault.connector_secret(store, name, options.token_secret)
        if token is None:
            raise ConnectorError(
                f"connector {name}: its secret {options.token_secret} is not set",
                hint=f"set it with `conveyor connectors secret {name} {options.token_secret}`",
            )
    cursor = _cursor(store, name)
    with connector.source.api(options, token) as api:
        try:
            pulled = connector.source.pull(api, options, cursor)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # An answer shaped otherwise than the tool documents: say so, store nothing.
            raise ConnectorError(
                f"connector {name}: an answer of {api.base_url} is not as documented ({exc!r})"
            ) from None
        requests = api.requests
    text = "\n".join(jsonio.dumps(record) for record in pulled.records)
    try:
        summary = import_history(
            store, text, base=None, actor=f"connector:{name}", origin=f"connector {name}"
        )
    except ImportFailed as exc:
        # The tool answered something the import refuses (an environment name Conveyor
        # cannot take, say): the lines are this pull's records, in order.
        raise ConnectorError(
            f"connector {name}: what it pulled cannot be imported: {exc.message}",
            hint="map the tool's names with `environments:` in the connectors file",
        ) from None
    imported = summary.as_dict()
    now = utcnow()
    _record(
        store, name, tried_at=now, synced_at=now, error=None, cursor=pulled.cursor, summary=imported
    )
    return Synced(name, len(pulled.records), pulled.skipped, requests, imported)


def _cursor(store: Store, name: str) -> dict[str, Any]:
    with store.session() as session:
        row = session.get(ConnectorState, name)
        return dict(row.cursor) if row is not None else {}


def _record(store: Store, name: str, **values: Any) -> None:
    with store.write() as w:
        row = w.session.get(ConnectorState, name)
        if row is None:
            row = ConnectorState(name=name, cursor={}, summary={})
            w.session.add(row)
        for key, value in values.items():
            setattr(row, key, value)


def states(store: Store) -> dict[str, ConnectorState]:
    """Each connector's stored state (cursor, last sync, last error), by name."""
    with store.session() as session:
        rows = session.query(ConnectorState).all()
        session.expunge_all()
        return {row.name: row for row in rows}


def listing(store: Store, path: Path | None = None) -> list[dict[str, Any]]:
    """Each connector of the file with how its last sync went (`conveyor connectors list`,
    ``GET /api/v1/connectors``); never a token."""
    found, known = configured(store, path), states(store)
    rows = []
    for name, connector in found.items():
        state = known.get(name)
        rows.append(
            {
                "name": name,
                "type": connector.type,
                "every_seconds": connector.every,
                "token_secret": connector.options.token_secret,
                "synced_at": state.synced_at if state is not None else None,
                "tried_at": state.tried_at if state is not None else None,
                "error": state.error if state is not None else None,
                "last_import": (state.summary or None) if state is not None else None,
            }
        )
    return rows


def sync_named(store: Store, name: str, path: Path | None = None) -> Synced:
    """Sync connector ``name`` of the file now (NotFound naming the known ones)."""
    found = configured(store, path)
    if name not in found:
        raise NotFound(
            f"there is no connector {name}",
            hint=f"connectors: {', '.join(found) or 'none'} (see docs/import.md, Connectors)",
        )
    return sync(store, found[name])


def set_token(
    store: Store, name: str, secret: str, value: str, by: str | None, path: Path | None = None
) -> dict[str, Any]:
    """Store ``secret`` for connector ``name`` of the file (sealed, read by it alone)."""
    vault.check_name(secret)
    if name not in configured(store, path):
        raise NotFound(f"there is no connector {name}", hint="add it to the connectors file first")
    return vault.set_connector_secret(store, name, secret, value.strip(), by)


def due(connector: Configured, state: ConnectorState | None, now: dt.datetime) -> bool:
    last = state.tried_at if state is not None else None
    return last is None or (now - last).total_seconds() >= connector.every


def claim_turn(store: Store, connector: Configured, now: dt.datetime) -> bool:
    """Take this turn of ``connector`` (one conditional UPDATE): several servers on one
    database sync each connector once per turn, not once each."""
    name, cutoff = connector.name, now - dt.timedelta(seconds=connector.every)
    try:
        with store.write() as w:
            if w.session.get(ConnectorState, name) is None:
                w.session.add(ConnectorState(name=name, cursor={}, summary={}))
                w.session.flush()
            taken = cast(
                "CursorResult[Any]",
                w.session.execute(
                    update(ConnectorState)
                    .where(
                        ConnectorState.name == name,
                        or_(ConnectorState.tried_at.is_(None), ConnectorState.tried_at <= cutoff),
                    )
                    .values(tried_at=now)
                    .execution_options(synchronize_session=False)
                ),
            )
            return taken.rowcount == 1
    except IntegrityError:
        return False  # another server made its row at the same moment: its turn


def sync_due(store: Store, path: Path | None = None) -> int:
    """Sync every connector that is due; the server's periodic step. Returns how many ran.
    One connector failing is logged and keeps no other from running."""
    try:
        connectors = configured(store, path)
    except ConveyorError as exc:
        log.error("connectors: %s", exc.message)
        return 0
    if not connectors:
        return 0
    known, now, ran = states(store), utcnow(), 0
    for name, connector in connectors.items():
        if not due(connector, known.get(name), now) or not claim_turn(store, connector, now):
            continue
        ran += 1
        try:
            done = sync(store, connector)
        except ConveyorError as exc:
            log.error("connector %s: %s", name, exc.message)
            continue
        added = done.imported["deployments"]["added"] + done.imported["incidents"]["added"]
        if added or done.imported["incidents"]["resolved"]:
            log.info("connector %s: %s", name, _line(done))
    return ran


def _line(done: Synced) -> str:
    d, i = done.imported["deployments"], done.imported["incidents"]
    return (
        f"{d['added']} deployments new ({d['present']} already present), "
        f"{i['added']} incidents new, {i['resolved']} resolved"
    )
