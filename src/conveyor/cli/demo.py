"""`conveyor demo`: the whole story of a commit to production, on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="A new or empty folder for the sample repository and the data (default: a new "
    "temporary folder).",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="The server's port on 127.0.0.1 (0: any free port). Default: 8080, or a free port "
    "if 8080 is taken.",
)
@click.option("--interactive", is_flag=True, help="Wait for you to approve (in the UI or the CLI).")
@click.option(
    "--exit", "exit_at_end", is_flag=True, help="Stop at the end instead of serving the UI."
)
@click.option("--fast", is_flag=True, help="No pauses for reading (the demo approves at once).")
def demo(
    directory: Path | None, port: int | None, interactive: bool, exit_at_end: bool, fast: bool
) -> None:
    """Create a sample service in a fresh git repository, start a server with the web UI on
    127.0.0.1, and follow three commits to production: build, tests, staging, smoke tests,
    notification, approval, production, a failed health check with automatic rollback and an
    incident, and the fix. Then the DORA figures. Set CONVEYOR_SLACK_WEBHOOK to have the
    notices posted to Slack too."""
    from conveyor.cli.common import settings
    from conveyor.cli.dora import render
    from conveyor.demo.story import Options, run_demo
    from conveyor.sandbox import configure

    # The demo's server sandboxes the sample's jobs and releases: say at once if it cannot.
    configure(settings=settings())
    options = Options(
        directory=directory,
        port=port,
        interactive=interactive,
        exit_at_end=exit_at_end,
        fast=fast,
        slack_webhook=settings().slack_webhook,
        show_dora=render,
    )
    code = run_demo(options)
    if code:
        sys.exit(code)
