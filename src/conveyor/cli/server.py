"""`conveyor server`: the HTTP API, webhooks, runner protocol and built-in runner."""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlsplit

import click

from conveyor.cli.common import store_for


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _sinks(given: tuple[str, ...]) -> tuple[str, ...]:
    """--cdevents-sink values, else CONVEYOR_CDEVENTS_SINKS (comma-separated); http(s) only."""
    urls = list(given) or os.environ.get("CONVEYOR_CDEVENTS_SINKS", "").split(",")
    sinks: list[str] = []
    for url in (u.strip() for u in urls):
        if not url:
            continue
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise click.BadParameter(
                f"{url!r} is not an http(s) URL", param_hint="'--cdevents-sink'"
            )
        sinks.append(url)
    return tuple(dict.fromkeys(sinks))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--runners",
    "runner_slots",
    type=click.IntRange(min=0),
    default=None,
    help="Jobs the built-in runner runs at once (default: CPU count; 0: agents only).",
)
@click.option("--labels", default=None, help="The built-in runner's labels, comma-separated.")
@click.option("--max-runs", default=8, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--deliver/--no-deliver",
    default=True,
    show_default=True,
    help="Carry out deployments in this process (one server of a cluster is enough).",
)
@click.option(
    "--prometheus-url",
    envvar="CONVEYOR_PROMETHEUS_URL",
    default=None,
    help="Prometheus for health checks that name no URL [env: CONVEYOR_PROMETHEUS_URL].",
)
@click.option(
    "--cdevents-sink",
    "cdevents_sinks",
    multiple=True,
    metavar="URL",
    help="Send every run, deployment and incident as CDEvents (CloudEvents over HTTP) to this "
    "URL; repeatable [env: CONVEYOR_CDEVENTS_SINKS, comma-separated].",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def server(
    host: str,
    port: int,
    runner_slots: int | None,
    labels: str | None,
    max_runs: int,
    deliver: bool,
    prometheus_url: str | None,
    cdevents_sinks: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve the API on HOST:PORT (127.0.0.1:8080), with the engine and a runner inside."""
    import uvicorn

    from conveyor.server.app import ServerConfig, create_app

    if not _loopback(host):
        click.echo(
            f"warning: listening on {host}, not only this machine; put TLS in front of it",
            err=True,
        )
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sinks = _sinks(cdevents_sinks)
    store = store_for()
    config = ServerConfig(
        runner_slots=os.cpu_count() or 2 if runner_slots is None else runner_slots,
        max_running_runs=max_runs,
        runner_labels=tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else None,
        delivery=deliver,
        prometheus_url=prometheus_url,
        cdevents_sinks=sinks,
    )
    app = create_app(store, config)
    click.echo(f"conveyor server on http://{host}:{port}  (data: {store.home})", err=True)
    if sinks:
        # Hosts only: a sink's URL may carry a credential.
        hosts = ", ".join(urlsplit(url).netloc.rpartition("@")[2] for url in sinks)
        click.echo(f"CDEvents to {hosts}", err=True)
    # The standard asyncio loop, not uvloop: it spawns step processes several times faster.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, loop="asyncio")
