"""`conveyor edge`: the process that holds the environments' stable ports (decision 0014).

`conveyor server` starts one when it first needs it; `run` is for a service manager (systemd)
that keeps it up itself. `status` shows the routes, `stop` ends it, and production with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from conveyor.cli.common import local_only, print_json, print_table, settings_for
from conveyor.errors import ConveyorError


@click.group()
def edge() -> None:
    """The process holding the stable ports: run, status, stop."""


# The edge is a process on the server's machine, found through its data directory.
_ON_THE_MACHINE = (
    "the edge runs beside the server: run `conveyor edge` on its machine, with its CONVEYOR_HOME"
)


@edge.command()
def run() -> None:
    """Serve the routes of this data directory in the foreground until SIGTERM; exits at once
    (status 0) if an edge already serves it."""
    local_only("edge run", _ON_THE_MACHINE)
    from conveyor.edge.daemon import EdgeDaemon

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s edge: %(message)s")
    raise SystemExit(asyncio.run(EdgeDaemon(settings_for().home).run()))


@edge.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """The edge's pid and its routes: stable port, where it forwards, open connections."""
    local_only("edge status", _ON_THE_MACHINE)
    reply = _request({"op": "status"})
    if as_json:
        print_json(reply)
        return
    click.echo(f"edge pid {reply['pid']}, up {reply['uptime']:g} s, protocol {reply['protocol']}")
    rows = [
        [
            r["name"],
            f":{r['port']}",
            f":{r['upstream']}" if r["upstream"] else "-",
            str(r["connections"]),
            r["error"] or ("listening" if r["listening"] else "not listening"),
        ]
        for r in reply["routes"]
    ]
    print_table(["ROUTE", "PORT", "FORWARDS TO", "OPEN", "STATE"], rows)


@edge.command()
def stop() -> None:
    """Stop the edge: every stable port stops answering until an edge runs again."""
    local_only("edge stop", _ON_THE_MACHINE)
    from conveyor.edge.client import stop_edge

    pid = stop_edge(settings_for().home)
    click.echo(f"stopped the edge (pid {pid})" if pid else "no edge is running")


def _request(message: dict[str, Any]) -> dict[str, Any]:
    from conveyor.edge.client import EdgeClient

    client = EdgeClient(settings_for().home, spawn=False)
    try:
        return asyncio.run(client.request(message))
    except ConveyorError:
        raise ConveyorError(
            f"no edge answers for {client.paths.home}",
            hint="`conveyor server` starts one when an environment needs it; "
            "or run `conveyor edge run`",
        ) from None
