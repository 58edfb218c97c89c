"""What the commands share: finding the data directory, opening the store, printing.

Imported by every command, also by those that only talk to a server (CONVEYOR_URL): the store,
SQLAlchemy and the engine are imported here only by the functions that open the store, so that
such commands start without them (tests/cli/test_cli_startup.py, bench/cli_startup.py)."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conveyor import jsonio
from conveyor.errors import ConveyorError
from conveyor.settings import Settings as ConveyorSettings

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.store.db import Settings, Store

_SETTINGS = "conveyor.settings"


def interactive() -> bool:
    """Rich output only for a person at a terminal; CI logs get plain lines."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def interactive_input() -> bool:
    """Whether a person can answer a question (a confirmation) on this terminal."""
    return sys.stdin.isatty()


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def repository_root(start: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def settings() -> ConveyorSettings:
    """This command's settings (CONVEYOR_*): read from the environment once, on first use,
    and kept on the command's context for the rest of it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:  # called outside a command (a test, a script)
        return ConveyorSettings.from_env()
    root = ctx.find_root()
    found = root.meta.get(_SETTINGS)
    if not isinstance(found, ConveyorSettings):
        found = root.meta[_SETTINGS] = ConveyorSettings.from_env()
    return found


def local_only(command: str, why: str) -> None:
    """Refuse a command that works on the local store only while CONVEYOR_URL names a server:
    it would otherwise quietly make a new `.conveyor` here instead of acting on the server."""
    url = settings().url
    if url:
        raise ConveyorError(
            f"`conveyor {command}` works on the local store only; unset CONVEYOR_URL or run it "
            f"on the server (CONVEYOR_URL is {url})",
            hint=why,
        )


def actor() -> str:
    """Who acts in embedded commands: CONVEYOR_USER, else the login name."""
    return settings().user or getpass.getuser()


def settings_for(repo: Path | None = None) -> Settings:
    """CONVEYOR_HOME if set, else `.conveyor/` at the top of the repository (or here)."""
    from conveyor.store.db import Settings

    given = settings()
    if given.home is not None:
        return Settings.resolve(settings=given)
    root = repo or repository_root(Path.cwd()) or Path.cwd()
    return Settings.resolve(default_root=root, settings=given)


def store_for(repo: Path | None = None, *, recover: bool = True) -> Store:
    """The local store; with ``recover``, runs whose process stopped are marked interrupted
    first. The engine that marks them is imported only when there are unfinished runs to look
    at: a listing of finished runs reads the store alone."""
    from conveyor.store.db import open_store
    from conveyor.store.owners import owned_unfinished_runs

    store = open_store(settings_for(repo))
    if not recover:
        return store
    with store.session() as session:
        unfinished = owned_unfinished_runs(session)
    if unfinished:
        from conveyor.engine.recovery import recover_interrupted

        for run_id in recover_interrupted(store):
            click.echo(f"run {run_id} was interrupted: the process running it stopped", err=True)
    return store


def print_json(value: Any) -> None:
    click.echo(jsonio.dumps(value, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if interactive():
        from rich.table import Table

        table = Table(*headers, box=None, pad_edge=False, header_style="bold")
        for row in rows:
            table.add_row(*row)
        console().print(table)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_listing(
    found: Sequence[Mapping[str, Any]],
    as_json: bool,
    headers: Sequence[str],
    row: Callable[[Mapping[str, Any]], Sequence[str]],
    *,
    empty: str | None = None,
) -> None:
    """A listing as JSON, or as a table of one ``row`` per item; ``empty`` is said instead of a
    table without rows."""
    if as_json:
        print_json(found)
    elif not found and empty is not None:
        click.echo(empty)
    else:
        print_table(headers, [row(item) for item in found])


def print_detail(
    data: Mapping[str, Any], as_json: bool, show: Callable[[Mapping[str, Any]], None]
) -> None:
    """One thing (a run, a release, an incident) as JSON, or as ``show`` puts it for people."""
    if as_json:
        print_json(data)
    else:
        show(data)


def plural(n: float, word: str) -> str:
    """ "1 day", "2 days", "0 days"."""
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return "-"
    end = end or dt.datetime.now(dt.UTC)
    seconds = (end - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "yellow",
    "queued": "cyan",
    "pending": "dim",
    "skipped": "dim",
    "cancelled": "magenta",
    "interrupted": "magenta",
}

# Shapes as well as colours, so that state never rests on colour alone.
STATUS_MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "running": "●",
    "queued": "○",
    "pending": "·",
    "skipped": "–",
    "cancelled": "⊘",
    "interrupted": "⚠",
}
