"""`conveyor runner`: a runner agent that executes jobs for a Conveyor server on this machine."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import click


def _default_work_dir(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "conveyor" / "runner" / name


def _plain_http_elsewhere(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def _echo(line: str, err: bool = False) -> None:
    click.echo(line, err=err)


@click.command()
@click.option(
    "--server",
    "server_url",
    default=None,
    help="The server's URL, e.g. https://ci.example.com (or CONVEYOR_URL).",
)
@click.option(
    "--token",
    default=None,
    help="A token with the runner scope (or CONVEYOR_TOKEN): "
    "`conveyor token create NAME --scope runner`.",
)
@click.option("--labels", default="", help="This runner's labels, comma-separated (runs_on).")
@click.option(
    "--slots", default=1, show_default=True, type=click.IntRange(min=1), help="Jobs at once."
)
@click.option("--name", default=None, help="Name shown on the jobs it runs (default: host name).")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where workspaces and downloaded sources live (default: ~/.cache/conveyor/runner/NAME).",
)
@click.option(
    "--unsafe-no-sandbox",
    "no_sandbox",
    is_flag=True,
    help="Run jobs without the bubblewrap sandbox, as this user, seeing this machine's files: "
    "only where everyone who can push is trusted [env: CONVEYOR_SANDBOX=off].",
)
def runner(
    server_url: str | None,
    token: str | None,
    labels: str,
    slots: int,
    name: str | None,
    work_dir: Path | None,
    no_sandbox: bool,
) -> None:
    """Run jobs for a Conveyor server: long-poll it for jobs whose runs_on labels this runner
    has, execute them here, report logs, results and artifacts.

    Prints one line per job leased and per job finished. SIGTERM or Ctrl-C lets running jobs
    finish and takes no new ones; a second signal ends them now (the server gives them to
    another runner once their leases expire).

    Secrets (${{ secrets.NAME }}) come from the server with each job: the ones its env
    references, of its service. This process's environment is never a source of secrets.
    """
    from conveyor.cli.common import settings
    from conveyor.runner.agent import Agent
    from conveyor.sandbox import configure

    given = settings()
    server_url = server_url or given.url
    token = token or given.token
    if not server_url:
        raise click.MissingParameter(param_hint="'--server'", param_type="option")
    if not token:
        raise click.MissingParameter(param_hint="'--token'", param_type="option")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # First: a runner that cannot sandbox jobs refuses to start (one line, naming the fix).
    sandbox = configure(disabled=no_sandbox, settings=given)

    name = name or socket.gethostname()
    label_list = [x.strip() for x in labels.split(",") if x.strip()]
    agent = Agent(
        server_url,
        token,
        name,
        label_list,
        slots,
        work_dir or _default_work_dir(name),
        echo=_echo,
        sandbox=sandbox,
        settings=given,
    )
    if _plain_http_elsewhere(server_url):
        _echo(
            f"warning: {server_url} is plain http to another machine; the token is sent in clear",
            err=True,
        )
    _echo(
        f"runner {name} (labels: {','.join(agent.labels) or '-'}; slots: {agent.slots}) "
        f"taking jobs from {agent.server_url}; work dir {agent.work_dir}",
        err=True,
    )
    asyncio.run(agent.serve(handle_signals=True))
    _echo(f"runner {name} stopped", err=True)
