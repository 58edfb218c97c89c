"""`conveyor connectors`: the connectors of the connectors file (docs/import.md): list them with
how their last sync went, sync one now, and set the token one reads.

Connectors run where the server runs, against its data directory (the server syncs each when
it is due); these commands work on that data directory, like `conveyor db`. A token is read
from stdin, a file or a prompt that does not echo, and stored as a secret only that connector
reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from conveyor.cli.common import actor, print_json, print_listing, settings, store_for, when
from conveyor.errors import ConveyorError


def _store_and_connectors() -> tuple[Any, Any]:
    if settings().url:
        raise ConveyorError(
            "connectors run on the server's host, against its data directory",
            hint="run `conveyor connectors` there, without CONVEYOR_URL",
        )
    from conveyor.connectors.sync import configured

    store = store_for(recover=False)
    try:
        return store, configured(store, settings().connectors_file)
    except ConveyorError:
        store.close()
        raise


@click.group()
def connectors() -> None:
    """Pull deployments and incidents from GitHub, GitLab, Argo CD, PagerDuty, Opsgenie.

    Configured in CONVEYOR_HOME/connectors.yml (CONVEYOR_CONNECTORS_FILE); the server syncs
    each one every so often (its `every`)."""


@connectors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def connectors_list(as_json: bool) -> None:
    """The connectors, their type, and their last sync."""
    from conveyor.connectors.sync import states

    store, found = _store_and_connectors()
    try:
        known = states(store)
    finally:
        store.close()
    rows = []
    for name, connector in found.items():
        state = known.get(name)
        imported = state.summary if state is not None else {}
        rows.append(
            {
                "name": name,
                "type": connector.type,
                "every_seconds": connector.every,
                "synced_at": state.synced_at if state is not None else None,
                "tried_at": state.tried_at if state is not None else None,
                "error": state.error if state is not None else None,
                "last_import": imported or None,
            }
        )
    print_listing(
        rows,
        as_json,
        ["NAME", "TYPE", "LAST SYNC", "STATUS"],
        lambda r: [
            r["name"],
            r["type"],
            when(r["synced_at"]),
            f"failed: {r['error']}" if r["error"] else ("ok" if r["synced_at"] else "never synced"),
        ],
        empty="no connectors: see docs/import.md (Connectors) for connectors.yml",
    )


@connectors.command("sync")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def connectors_sync(name: str, as_json: bool) -> None:
    """Sync connector NAME now: pull what is new and import it."""
    from conveyor.connectors.sync import sync

    store, found = _store_and_connectors()
    try:
        if name not in found:
            names = ", ".join(found) or "none"
            raise ConveyorError(f"there is no connector {name} (connectors: {names})")
        done = sync(store, found[name])
    finally:
        store.close()
    if as_json:
        print_json(done.as_dict())
        return
    d, i = done.imported["deployments"], done.imported["incidents"]
    click.echo(
        f"connector {name}: pulled {done.pulled} records in {done.requests} requests"
        + (f" ({done.skipped} skipped)" if done.skipped else "")
    )
    click.echo(
        f"  deployments: {d['added']} new, {d['present']} already present"
        f" ({d['changes_added']} commits)"
    )
    click.echo(
        f"  incidents:   {i['added']} new, {i['present']} already present, {i['resolved']} resolved"
    )


@connectors.command("secret")
@click.argument("name")
@click.argument("secret_name")
@click.option(
    "--value-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the token from this file (default: stdin, or a prompt).",
)
def connectors_secret(name: str, secret_name: str, value_file: Path | None) -> None:
    """Set SECRET_NAME, the token connector NAME reads (its `token_secret`); only that
    connector can read it back. The value comes from stdin, --value-file or a prompt."""
    from conveyor.cli.secret import read_value
    from conveyor.store import vault

    vault.check_name(secret_name)
    store, found = _store_and_connectors()
    try:
        if name not in found:
            raise ConveyorError(
                f"there is no connector {name}", hint="add it to the connectors file first"
            )
        value = read_value(secret_name, value_file)
        done = vault.set_connector_secret(store, name, secret_name, value.strip(), actor())
    finally:
        store.close()
    how = "set" if done["created"] else "updated"
    click.echo(f"secret {secret_name} {how} for connector {name}")
