"""`conveyor import FILE`: deployment and incident history from other tools (JSON Lines, native
records or CDEvents; see docs/import.md). Embedded against the local store, or posted to the
server when CONVEYOR_URL is set. All or nothing; importing a file twice changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from conveyor.cli.common import actor, print_json, settings
from conveyor.errors import ConveyorError

# A large history through the API may take a while to check and write.
REMOTE_TIMEOUT_SECONDS = 900.0


def _read(file: str) -> tuple[bytes, Path]:
    """The file's bytes, and the directory its relative repository paths are relative to."""
    if file == "-":
        return sys.stdin.buffer.read(), Path.cwd()
    path = Path(file)
    try:
        return path.read_bytes(), path.resolve().parent
    except FileNotFoundError:
        raise ConveyorError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise ConveyorError(f"{file} is a directory, not a JSON Lines file") from None
    except OSError as exc:
        raise ConveyorError(f"cannot read {file}: {exc.strerror or exc}") from None


def _remote(url: str, data: bytes, dry_run: bool) -> dict[str, Any]:
    from conveyor.cli.backend import HttpBackend

    client = HttpBackend(url, settings().token)
    summary: dict[str, Any] = client._call(
        "POST",
        "/import",
        content=data,
        params={"dry_run": "true"} if dry_run else {},
        headers={"Content-Type": "application/x-ndjson"},
        timeout=REMOTE_TIMEOUT_SECONDS,
    )
    return summary


def _embedded(data: bytes, base: Path, dry_run: bool, origin: str) -> dict[str, Any]:
    from conveyor.cli.common import store_for
    from conveyor.metrics.imports import decode, import_history

    text = decode(data)
    store = store_for()
    try:
        summary = import_history(
            store, text, base=base, dry_run=dry_run, actor=actor(), origin=origin
        )
    finally:
        store.close()
    return summary.as_dict()


@click.command("import")
@click.argument("file")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything and say what would be imported; store nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def import_history(file: str, dry_run: bool, as_json: bool) -> None:
    """Import deployment and incident history from FILE (JSON Lines; - reads stdin).

    Records are {"kind": "deployment", ...} and {"kind": "incident", ...} lines, or CDEvents
    (service.deployed/upgraded/rolledback, incident.detected/reported/resolved), bare or as
    CloudEvents. A bad line names its number and field, and then nothing is imported.
    """
    data, base = _read(file)
    url = settings().url
    origin = "stdin" if file == "-" else file
    summary = _remote(url, data, dry_run) if url else _embedded(data, base, dry_run, origin)
    if as_json:
        print_json(summary)
        return
    _print(summary, origin)


def _print(summary: dict[str, Any], origin: str) -> None:
    deployments, incidents = summary["deployments"], summary["incidents"]
    verb = "would import" if summary["dry_run"] else "imported"
    click.echo(
        f"{verb} from {origin}: {summary['records']} records in {summary['seconds']:.2f}s"
        + (" (dry run: nothing stored)" if summary["dry_run"] else "")
    )
    click.echo(
        f"  deployments: {deployments['added']} new, {deployments['present']} already present"
        f" ({deployments['changes_added']} commits)"
    )
    resolved = f", {incidents['resolved']} resolved" if incidents["resolved"] else ""
    click.echo(
        f"  incidents:   {incidents['added']} new, {incidents['present']} already present"
        + resolved
    )
    if summary["duplicates"]:
        click.echo(f"  duplicates:  {summary['duplicates']} CDEvents seen twice in the file")
    if summary["ignored"]:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(summary["ignored"].items()))
        click.echo(f"  ignored:     CDEvents Conveyor does not import: {kinds}")
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}", err=True)
