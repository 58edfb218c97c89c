"""`conveyor connectors`: the connectors of the server's connectors file (docs/import.md): list
them with how their last sync went, sync one now, and set the token one reads.

Embedded against the data directory (its connectors file), or through the server when
CONVEYOR_URL is set (an admin token). A token is read from stdin, a file or a prompt that does
not echo, never from the command line, and is stored as a secret only that connector reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click

from conveyor.cli.common import actor, print_json, print_listing, settings, when

if TYPE_CHECKING:
    from conveyor.store.db import Store

T = TypeVar("T")


def _remote(method: str, path: str, **kwargs: Any) -> Any:
    from conveyor.cli.backend import HttpBackend

    given = settings()
    assert given.url is not None
    return HttpBackend(given.url, given.token)._call(method, path, **kwargs)


def _embedded(work: Callable[[Store, Path | None], T]) -> T:
    from conveyor.cli.common import store_for

    store = store_for(recover=False)
    try:
        return work(store, settings().connectors_file)
    finally:
        store.close()


@click.group()
def connectors() -> None:
    """Pull deployments and incidents from GitHub, GitLab, Argo CD, PagerDuty, Opsgenie.

    Configured in the server's connectors file (CONVEYOR_HOME/connectors.yml, or
    CONVEYOR_CONNECTORS_FILE); the server syncs each one every so often (its `every`)."""


@connectors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def connectors_list(as_json: bool) -> None:
    """The connectors, their type, and their last sync."""
    if settings().url:
        rows = _remote("GET", "/connectors")
    else:
        from conveyor.connectors.sync import listing

        rows = _embedded(listing)
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
    if settings().url:
        done = _remote("POST", f"/connectors/{quote(name, safe='')}/sync", timeout=600.0)
    else:
        from conveyor.connectors.sync import sync_named

        done = _embedded(lambda store, path: sync_named(store, name, path).as_dict())
    if as_json:
        print_json(done)
        return
    d, i = done["import"]["deployments"], done["import"]["incidents"]
    skipped = f" ({done['skipped']} skipped)" if done["skipped"] else ""
    click.echo(
        f"connector {name}: pulled {done['pulled']} records in {done['requests']} requests{skipped}"
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
    from conveyor.connectors.sync import set_token
    from conveyor.store.vault import check_name

    check_name(secret_name)  # before asking for a value that could not be kept
    value = read_value(secret_name, value_file)
    if settings().url:
        done = _remote(
            "PUT",
            f"/connectors/{quote(name, safe='')}/secrets/{secret_name}",
            json={"value": value.strip()},
        )
    else:
        done = _embedded(
            lambda store, path: set_token(store, name, secret_name, value, actor(), path)
        )
    how = "set" if done["created"] else "updated"
    click.echo(f"secret {secret_name} {how} for connector {name}")
