"""`conveyor hook`: the git hook that hands pushes and commits to the server."""

from __future__ import annotations

import os
from pathlib import Path

import click

from conveyor.errors import ConveyorError

DEFAULT_SERVER = "http://127.0.0.1:8080"


@click.group()
def hook() -> None:
    """Git hooks that hand changes to the server: install, flush, uninstall.

    In a bare repository the post-receive hook reports every push; in a working repository
    post-commit, post-merge and post-rewrite report commits, merges and rebases on the
    watched branches. A change the server
    cannot take at once (it is down) is queued in the spool and delivered by the next run of
    the hook, by `conveyor hook flush`, or by the server when it is back. The push or commit
    itself never fails nor waits on the server.
    """


def _branches(value: str | None) -> list[str] | None:
    if value is None:
        return None
    if value.strip() in ("*", ""):
        return []
    return [b.strip() for b in value.split(",") if b.strip()]


@hook.command("install")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--server",
    envvar="CONVEYOR_URL",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The server's URL (default: CONVEYOR_URL).",
)
@click.option(
    "--token",
    envvar="CONVEYOR_TOKEN",
    help="A token with the trigger scope (default: CONVEYOR_TOKEN).",
)
@click.option(
    "--branches",
    help="Branches to report, comma-separated globs (main,release/*); '*' for all. "
    "Default: on.push.branches of conveyor.yml at HEAD, else all.",
)
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where changes wait while the server is down (default: <git dir>/conveyor-spool).",
)
@click.option("--force", is_flag=True, help="Move a hook of the same name aside first.")
def hook_install(
    repo: Path,
    server: str,
    token: str | None,
    branches: str | None,
    spool: Path | None,
    force: bool,
) -> None:
    """Install the hook in REPO (default: here)."""
    from conveyor.sources.hook import install

    if not token:
        raise ConveyorError(
            "the hook needs a token to call the server",
            hint="create one with `conveyor token create hooks --scope trigger`, then pass "
            "--token or set CONVEYOR_TOKEN",
        )
    done = install(
        repo, server=server, token=token, branches=_branches(branches), spool=spool, force=force
    )
    for path in done.moved_aside:
        click.echo(f"moved the existing hook aside to {path}")
    kind = "pushes" if done.repository.bare else "commits"
    watched = ", ".join(done.branches) if done.branches else "all branches"
    for path in done.hooks:
        click.echo(f"installed {path}")
    click.echo(f"{kind} to {watched} of {done.repository.path} go to {server}")
    click.echo(f"spool: {done.spool}")


@hook.command("flush")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--server", help="Default: the installed hook's server.")
@click.option("--token", help="Default: the installed hook's token.")
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: the installed hook's spool.",
)
def hook_flush(repo: Path, server: str | None, token: str | None, spool: Path | None) -> None:
    """Deliver the changes queued in REPO's spool now; exit 1 if some are left."""
    from conveyor.sources.hook import flush

    result = flush(repo, server=server, token=token, spool=spool)
    click.echo(f"delivered {result.delivered}, {result.left} left in {result.spool}")
    if result.rejected:
        click.echo(
            f"{result.rejected} set aside as *.rejected in {result.spool} (refused by the "
            f"server, or not readable): {result.problem}",
            err=True,
        )
    if result.left:
        raise ConveyorError(
            f"{result.left} change(s) are still queued: {result.problem}",
            hint="is `conveyor server` running, and is the token valid?",
        )


@hook.command("uninstall")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
def hook_uninstall(repo: Path) -> None:
    """Remove Conveyor's hooks from REPO (and put back hooks moved aside)."""
    from conveyor.sources.hook import locate, uninstall

    removed, restored = uninstall(repo)
    for path in removed:
        click.echo(f"removed {path}")
    for path in restored:
        click.echo(f"restored the earlier hook {path}")
    if not removed:
        click.echo("no Conveyor hook was installed")
    spool = locate(repo).default_spool
    if spool.is_dir() and any(n.endswith(".json") for n in os.listdir(spool)):
        click.echo(
            f"changes are still queued in {spool}; deliver them with `conveyor hook flush "
            "--server URL --token T` or remove the directory",
            err=True,
        )
