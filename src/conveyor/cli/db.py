"""`conveyor db`: the database schema."""

from __future__ import annotations

import click

from conveyor.cli.common import local_only, settings, settings_for
from conveyor.store.db import (
    SCHEMA_REVISION,
    Store,
    current_revision,
    make_engine,
    open_store,
    upgrade,
)


@click.group()
def db() -> None:
    """Database schema: upgrade, current revision, DORA backfill, retention."""


# The schema, the DORA history and the retention are the database's: acted on where it is.
_ON_THE_DATABASE = (
    "`conveyor db` acts on the database itself: run it where the server's data directory is, "
    "with its CONVEYOR_HOME (or CONVEYOR_DATABASE_URL)"
)


def _backfill(store: Store) -> bool:
    """Derive the DORA facts deployments made before schema 0006 never got (idempotent)."""
    from conveyor.metrics.backfill import backfill_facts

    done = backfill_facts(store, warn=lambda text: click.echo(f"warning: {text}", err=True))
    if done.derived:
        click.echo(f"derived the DORA facts of {done.derived} earlier deployment(s)")
    return not done.skipped


def _summarise(store: Store) -> None:
    """Tally the DORA history now if an upgrade dropped the summary (or it never was), so that
    the first report after an upgrade only adds days up."""
    from conveyor.store.marks import summary_work

    with store.session() as session:
        if not summary_work(session):
            return
    from conveyor.metrics.summary import keep_current

    keep_current(store)
    click.echo("the DORA summary is up to date")


@db.command("upgrade")
def upgrade_command() -> None:
    """Migrate the database to this version of Conveyor (back it up first)."""
    local_only("db upgrade", _ON_THE_DATABASE)
    settings = settings_for()
    engine = make_engine(settings)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"the database is already at schema {after}")
    else:
        click.echo(f"upgraded the database from schema {before or 'none'} to {after}")
    store = open_store(settings, upgrade_new=False)
    try:
        _backfill(store)
        _summarise(store)
    finally:
        store.close()


@db.command("backfill")
def backfill_command() -> None:
    """Derive the DORA facts of deployments that have none (run by `db upgrade` too)."""
    local_only("db backfill", _ON_THE_DATABASE)
    store = open_store(settings_for(), upgrade_new=False)
    try:
        complete = _backfill(store)
    finally:
        store.close()
    if complete:
        click.echo("every ended deployment has its DORA facts")


@db.command("current")
def current_command() -> None:
    """Print the database's schema revision and the one this Conveyor needs."""
    local_only("db current", _ON_THE_DATABASE)
    engine = make_engine(settings_for())
    try:
        click.echo(f"database: {current_revision(engine) or 'none'}")
    finally:
        engine.dispose()
    click.echo(f"needed:   {SCHEMA_REVISION}")


@db.command("prune")
@click.option("--usage", is_flag=True, help="Only print how much log the store holds.")
def prune_command(usage: bool) -> None:
    """Apply the retention settings now: CONVEYOR_LOG_RETENTION, CONVEYOR_ARTIFACT_RETENTION
    and CONVEYOR_KEEP_BUNDLES (the server does it every hour)."""
    local_only("db prune", _ON_THE_DATABASE)
    from conveyor.delivery.retention import prune
    from conveyor.sandbox import format_bytes
    from conveyor.store import retention

    store = open_store(settings_for(), upgrade_new=False)
    try:
        if not usage:
            for line in prune(store, settings()).lines():
                click.echo(line)
        with store.write() as w:
            used = retention.stored_log_bytes(w)
    finally:
        store.close()
    click.echo(
        f"logs stored: {format_bytes(used)} of {format_bytes(settings().log_store_limit)} "
        f"({retention.LOG_STORE_VARIABLE})"
    )
