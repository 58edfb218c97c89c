"""`conveyor hook`: the git hook that hands pushes and commits to the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.sources.hook import GitRepository

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
    default=None,
    help=f"The server's URL (default: CONVEYOR_URL, else {DEFAULT_SERVER}).",
)
@click.option(
    "--token",
    help="An admin token, to create the hook's own token on the server with (default: "
    "CONVEYOR_TOKEN; without one, it is created in the data directory, CONVEYOR_HOME); with "
    "--reuse-token, the token the hook uses.",
)
@click.option(
    "--reuse-token",
    is_flag=True,
    help="Install --token itself instead of creating a token for this hook (make it a "
    "trigger token limited to the repository's services).",
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
    server: str | None,
    token: str | None,
    branches: str | None,
    spool: Path | None,
    force: bool,
    reuse_token: bool,
) -> None:
    """Install the hook in REPO (default: here).

    The hook gets a token of its own: scope trigger, limited to the services built from REPO,
    of no user (the pushers it names are recorded as its claims), replacing the token of a hook
    installed here before. It is created on the server with --token (an admin's), or, without
    --token, in the data directory (CONVEYOR_HOME), as `conveyor token create` does."""
    from conveyor.cli.common import settings
    from conveyor.sources.hook import install

    given = settings()
    server = server or given.url or DEFAULT_SERVER
    token = token or given.token
    local = not token and bool(given.home or given.database_url)
    if not token and (reuse_token or not local):
        raise ConveyorError(
            "the hook needs a token to call the server",
            hint="pass an admin token (--token or CONVEYOR_TOKEN) to create the hook's own, set "
            "CONVEYOR_HOME to create it in the data directory, or create one with `conveyor "
            "token create hook-SERVICE --scope trigger --service SERVICE` and pass it with "
            "--token --reuse-token",
        )
    created: list[str] = []

    def hook_token(where: GitRepository) -> str:
        value, line = _hook_token(where, server, token)
        created.append(line)
        return value

    done = install(
        repo,
        server=server,
        token=token if reuse_token and token else hook_token,
        branches=_branches(branches),
        spool=spool,
        force=force,
    )
    for line in created:
        click.echo(line)
    for path in done.moved_aside:
        click.echo(f"moved the existing hook aside to {path}")
    kind = "pushes" if done.repository.bare else "commits"
    watched = ", ".join(done.branches) if done.branches else "all branches"
    for path in done.hooks:
        click.echo(f"installed {path}")
    click.echo(f"{kind} to {watched} of {done.repository.path} go to {server}")
    click.echo(f"spool: {done.spool}")


def _hook_token(where: GitRepository, server: str, token: str | None) -> tuple[str, str]:
    """A new token for the hook of ``where``: (the token, what to tell about it)."""
    from conveyor.sources.hook import installed_config

    previous = (installed_config(where) or {}).get("token")
    replaces = previous if isinstance(previous, str) else None
    if token:
        from conveyor.cli.backend import HttpBackend

        try:
            answer = HttpBackend(server, token)._call(
                "POST",
                "/hook-tokens",
                json={"repository": str(where.path)} | ({"replaces": replaces} if replaces else {}),
            )
        except ConveyorError as exc:
            raise ConveyorError(
                f"the hook's token could not be created: {exc.message}",
                hint=exc.hint
                or "--token must be an admin's; or create a trigger token limited to this "
                "repository's services and pass it with --reuse-token",
            ) from None
        value, name, services, revoked = (
            str(answer["token"]),
            answer["name"],
            answer["services"],
            answer["revoked"],
        )
    else:
        from conveyor.cli.common import store_for
        from conveyor.server.tokens import create_hook_token
        from conveyor.sources.hook import registered_services

        store = store_for()
        with store.session() as session:
            services = [s.name for s in registered_services(session, str(where.path))]
        if not services:
            raise ConveyorError(
                f"no service is registered for repository {where.path}",
                hint=f"`conveyor service add NAME --repo {where.path}` registers it",
            )
        value, name, revoked = create_hook_token(store, services, replaces)
    line = f"created token {name} for the hook (trigger, services {', '.join(sorted(services))})"
    return value, line + (f"; revoked the previous hook's token {revoked}" if revoked else "")


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
