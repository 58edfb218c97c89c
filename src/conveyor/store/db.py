"""Opening the store: SQLite (WAL) in the data directory by default, any SQLAlchemy URL on request.

Like JupyterHub, a brand-new database is created at the current schema, and an existing one at
an older schema is refused with the command that upgrades it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, insert, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.settings import Settings as ConveyorSettings
from conveyor.store import marks
from conveyor.store.models import Event, utcnow
from conveyor.store.private import private_database, private_dir

# The newest migration in conveyor/store/migrations/versions (a test keeps them in step).
SCHEMA_REVISION = "0019"

# Ids are 64-bit in the store; a larger number cannot name anything (and must not reach the
# database driver, which cannot even bind it).
MAX_ID = 2**63 - 1

RowT = TypeVar("RowT")


def get_or_not_found(
    session: Session, model: type[RowT], row_id: int, what: str, hint: str
) -> RowT:
    """The ``model`` row whose id is ``row_id``, or NotFound "there is no <what> <row_id>" with
    ``hint`` (the command that lists them)."""
    row = session.get(model, row_id) if 0 < row_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"there is no {what} {row_id}", hint=hint)
    return row


class SchemaOutdated(ConveyorError):
    pass


@dataclass(frozen=True)
class Settings:
    """Where Conveyor keeps its data: CONVEYOR_HOME, and CONVEYOR_DATABASE_URL if set; the
    key file of its secrets and its users file, when not in ``home``."""

    home: Path
    database_url: str
    secrets_key_file: Path | None = None
    users_file: Path | None = None

    @classmethod
    def resolve(
        cls,
        home: Path | None = None,
        default_root: Path | None = None,
        settings: ConveyorSettings | None = None,
    ) -> Settings:
        """From Conveyor's ``settings`` (a command's; tests and scripts that give none: this
        process's environment, read now)."""
        settings = ConveyorSettings.from_env() if settings is None else settings
        if home is None:
            home = settings.home or (default_root or Path.cwd()) / ".conveyor"
        home = home.absolute()
        url = settings.database_url or f"sqlite:///{home / 'conveyor.db'}"
        return cls(home, url, settings.secrets_key_file, settings.users_file)


Listener = Callable[[Event], None]


@dataclass
class Writer:
    """One transaction: projection changes plus the events that explain them."""

    session: Session
    events: list[Event] = field(default_factory=list)

    def emit(
        self,
        type_: EventType,
        *,
        service: str | None = None,
        run_id: int | None = None,
        job_id: int | None = None,
        **data: Any,
    ) -> Event:
        """Record an event of this transaction. ``type_`` is a member of the catalog
        (conveyor.events); plain text is accepted only until the last emitters that spell it
        (sources.intake, runner.reporting) name their members (tests/test_events_catalog.py
        checks that every type emitted with text is in the catalog)."""
        ev = Event(
            ts=utcnow(), type=type_, service=service, run_id=run_id, job_id=job_id, data=data
        )
        self.events.append(ev)
        return ev

    def flush_events(self) -> None:
        """Append this transaction's events in one statement (in the order they were emitted)."""
        if self.events:
            self.session.execute(
                insert(Event),
                [
                    {
                        "ts": ev.ts,
                        "type": ev.type,
                        "service": ev.service,
                        "run_id": ev.run_id,
                        "job_id": ev.job_id,
                        "data": ev.data,
                    }
                    for ev in self.events
                ],
            )


class Store:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_engine = _sqlite_writer(engine) if engine.dialect.name == "sqlite" else engine
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        # SQLite: this process's writers wait their turn on a lock, woken when it is released,
        # instead of polling SQLite's busy handler, which lets a steady writer (an agent's log
        # batches) starve the others for seconds: a heartbeat that waited that long let a
        # lease expire under a running job (tests/drills/test_drill_exactly_once.py).
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        for sessions in (self._sessions, self._write_sessions):
            event.listen(sessions, "before_flush", marks.before_flush)
        self._listeners: list[Listener] = []
        # For derived facts that never change once written (e.g. a run's job plan), per store.
        self.cache: dict[str, Any] = {}

    @property
    def home(self) -> Path:
        return self.settings.home

    def session(self) -> Session:
        return self._sessions()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextmanager
    def write(self) -> Iterator[Writer]:
        """Write in one transaction; listeners hear of its events only after the commit."""
        with self._serial, self._write_sessions() as session, session.begin():
            writer = Writer(session)
            yield writer
            writer.flush_events()
        for ev in writer.events:
            for listener in list(self._listeners):
                listener(ev)

    def close(self) -> None:
        self.engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()


def db_now(session: Session) -> dt.datetime:
    """The database's clock, read inside the caller's transaction.

    Leases and claims are judged by this one clock, never by each server's own: a server whose
    clock runs ahead would otherwise take every lease as expired at once and run the job a
    second time (tests/drills/test_drill_exactly_once.py, the clock-skew drill). On SQLite the
    database lives in the server's process, so its clock is that process's.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # clock_timestamp(), not now(): a long transaction must not judge by its start time.
        value = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    else:
        raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        value = dt.datetime.fromisoformat(str(raw))
    if not isinstance(value, dt.datetime):
        raise TypeError(f"the database's clock answered {value!r}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (conveyor logs --follow) run beside the writer; NORMAL is durable in WAL
    # against process crashes, which is the failure the design asks us to survive.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_writer(engine: Engine) -> Engine:
    """A second engine for write transactions that take SQLite's write lock at BEGIN.

    Python's sqlite3 begins a transaction only at its first INSERT or UPDATE, so the reads
    before it (check, then write: the state machine's way) would see data another writer may
    change before this one commits. BEGIN IMMEDIATE serialises whole write transactions, as
    row locks do on PostgreSQL. Reads keep the plain engine and never wait for writers (WAL).
    """
    writer = create_engine(engine.url, connect_args={"timeout": 30, "isolation_level": None})
    event.listen(writer, "connect", _sqlite_pragmas)

    @event.listens_for(writer, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return writer


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        try:
            private_dir(settings.home)
        except OSError as exc:
            raise ConveyorError(
                f"cannot create the data directory {settings.home}: {exc.strerror or exc}",
                hint="set CONVEYOR_HOME to a writable directory",
            ) from None
        try:
            database = make_url(url).database
        except ArgumentError:
            database = None  # create_engine says what is wrong with it
        if database and database != ":memory:" and not database.startswith("file:"):
            private_database(Path(database))
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise ConveyorError(
            f"the database driver for {url.split(':', 1)[0]} is not installed ({exc.name})",
            hint="pip install 'conveyor[postgres]'",
        ) from None
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConveyorError(
            f"CONVEYOR_DATABASE_URL is not a database URL Conveyor can use: {exc}",
            hint="e.g. postgresql+psycopg://user:password@127.0.0.1:5432/conveyor",
        ) from None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _has_tables(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(inspect(conn).get_table_names())


def open_store(settings: Settings | None = None, *, upgrade_new: bool = True) -> Store:
    """Open the store, creating a fresh one; refuse an existing one at an older schema."""
    settings = settings or Settings.resolve()
    engine = make_engine(settings)
    try:
        revision = current_revision(engine)
        if revision is None and upgrade_new:
            with _initialisation_lock(settings):
                revision = current_revision(engine)
                if revision is None and not _has_tables(engine):
                    _create(engine)
                    revision = SCHEMA_REVISION
    except DatabaseError as exc:  # also OperationalError: locked, unreachable, corrupt, ...
        engine.dispose()
        hint = (
            "check that it is reachable and is a Conveyor database; restore a backup "
            "if it is damaged"
        )
        if _read_only(settings):
            # Not damage: restoring a backup would not help (the storage drills).
            hint = (
                f"the data directory {settings.home} is read-only for this user: make it "
                "writable, or set CONVEYOR_HOME to a writable directory"
            )
        raise ConveyorError(
            f"cannot open the database {_safe_url(settings)}: {exc.orig}", hint=hint
        ) from None
    if revision != SCHEMA_REVISION:
        engine.dispose()
        raise SchemaOutdated(
            f"the database {_safe_url(settings)} is at schema {revision or 'none'}, "
            f"this Conveyor needs {SCHEMA_REVISION}",
            hint="back it up, then run `conveyor db upgrade`",
        )
    return Store(settings, engine)


class _SqliteImage:
    """The empty schema at SCHEMA_REVISION, as SQLite pages in memory: made by the migrations
    the first time this process creates a SQLite store, copied into the next ones. A process
    that creates many stores (the test suite creates hundreds) migrates once: a migration run
    costs half a second, a copy a few milliseconds. The pages are the migrations' own output,
    so a copied store is the migrated one, triggers and seed rows included."""

    def __init__(self) -> None:
        self._pages: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def create(self, engine: Engine) -> None:
        with self._lock:
            if self._pages is None:
                upgrade(engine)
                pages = sqlite3.connect(":memory:", check_same_thread=False)
                with engine.connect() as conn:
                    _raw(conn).backup(pages)
                self._pages = pages
            else:
                with engine.connect() as conn:
                    self._pages.backup(_raw(conn))


def _raw(conn: Any) -> sqlite3.Connection:
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


_sqlite_image = _SqliteImage()


def _create(engine: Engine) -> None:
    """A new store's schema: copied from this process's SQLite image, or migrated."""
    if engine.dialect.name == "sqlite":
        _sqlite_image.create(engine)
    else:
        upgrade(engine)


def _read_only(settings: Settings) -> bool:
    """Whether SQLite's data directory or database file cannot be written by this process."""
    if not settings.database_url.startswith("sqlite"):
        return False
    db = settings.home / "conveyor.db"
    return not os.access(settings.home, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))


@contextmanager
def _initialisation_lock(settings: Settings) -> Iterator[None]:
    """Two commands started at once on a new store must not both create it."""
    if not settings.database_url.startswith("sqlite"):
        yield  # upgrade() takes a PostgreSQL advisory lock in its transaction
        return
    import fcntl

    with open(settings.home / "conveyor.db.init-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (imported here: it is slow to import)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "conveyor.store:migrations")
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # A batch migration copies a table, drops the old one and renames the copy: with
            # foreign keys enforced, dropping a table that rows of another table name fails (an
            # upgrade from 0002 with data did). They are checked below instead. The pragma only
            # takes effect outside a transaction, so before the first statement.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Serialises concurrent upgrades (two servers starting on one new database).
                    conn.execute(text("SELECT pg_advisory_xact_lock(7263001)"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise ConveyorError(
                            f"the upgrade would leave table {broken[0]} naming a missing row "
                            f"of {broken[2]}; nothing was changed",
                            hint="restore the backup and report this",
                        )
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
