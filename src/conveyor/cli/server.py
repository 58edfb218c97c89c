"""`conveyor server`: the HTTP API, webhooks, runner protocol and built-in runner."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
from urllib.parse import urlsplit

import click

from conveyor.cli.common import settings as conveyor_settings
from conveyor.cli.common import store_for
from conveyor.errors import ConveyorError, listen_failure
from conveyor.server.limits import BodyLimits, describe, parse_limits
from conveyor.server.listen import (
    HEADER_TIMEOUT_SECONDS,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    guarded_protocol,
    raise_fd_limit,
    rate_limit_logs,
)

GRACEFUL_SHUTDOWN_SECONDS = 5
log = logging.getLogger("conveyor.server")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _trusted_proxies(value: str | None) -> list[str]:
    """--forwarded-allow-ips: addresses or networks whose X-Forwarded-For/-Proto are believed."""
    trusted: list[str] = []
    for item in (x.strip() for x in (value or "").split(",")):
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise click.BadParameter(
                    f"{item!r} is not an IP address or network",
                    param_hint="'--forwarded-allow-ips'",
                ) from None
        trusted.append(item)
    return trusted


def _body_limits(given: tuple[str, ...], configured: tuple[str, ...]) -> tuple[BodyLimits, int]:
    """--body-limit KIND=SIZE values, else ``configured`` (CONVEYOR_BODY_LIMITS)."""
    from conveyor.server.app import ServerConfig

    items = list(given) or list(configured)
    defaults = ServerConfig()
    try:
        return parse_limits(
            [x for x in items if x.strip()], defaults.body_limits, defaults.webhook_max_bytes
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--body-limit'") from None


def _sinks(given: tuple[str, ...], configured: tuple[str, ...]) -> tuple[str, ...]:
    """--cdevents-sink values, else ``configured`` (CONVEYOR_CDEVENTS_SINKS); http(s) only."""
    urls = list(given) or list(configured)
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


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here rather than by uvicorn: a port in use is said in one
    line with its remedy (uvicorn logs `[Errno 98]`), before anything else starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConveyorError(f"cannot listen on {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        message, hint = listen_failure(exc, host, port, "give another with --port N")
        raise ConveyorError(message, hint=hint) from None
    sock.set_inheritable(True)
    return sock


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
@click.option(
    "--forwarded-allow-ips",
    default=None,
    metavar="ADDRESSES",
    help="Believe X-Forwarded-For and X-Forwarded-Proto only from these proxies (IP addresses "
    "or networks, comma-separated). Default: from nobody, not even 127.0.0.1 "
    "[env: CONVEYOR_FORWARDED_ALLOW_IPS].",
)
@click.option(
    "--body-limit",
    "body_limits",
    multiple=True,
    metavar="KIND=SIZE",
    help="Largest request body for a kind of route: api (1MiB), webhook (25MiB), runner "
    "(256MiB), artifact (2GiB), import (64MiB); unauthenticated (32MiB) bounds all bodies of "
    "not-yet-authenticated senders read at once. Repeatable "
    "[env: CONVEYOR_BODY_LIMITS, comma-separated].",
)
@click.option(
    "--max-connections",
    default=None,
    type=click.IntRange(min=1),
    help="Open client connections at most; more are answered 503 and closed at once "
    f"[default: {MAX_CONNECTIONS}; env: CONVEYOR_MAX_CONNECTIONS].",
)
@click.option(
    "--header-timeout",
    default=HEADER_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a client has to send a request's headers before its connection is closed.",
)
@click.option(
    "--unsafe-no-sandbox",
    "no_sandbox",
    is_flag=True,
    help="Run pipeline code (jobs, deploy commands, checks) without the bubblewrap sandbox, "
    "as this user, seeing this machine's files: only where everyone who can push is trusted "
    "[env: CONVEYOR_SANDBOX=off].",
)
@click.option(
    "--edge",
    default=None,
    type=click.Choice(["detached", "embedded"]),
    help="Who holds the environments' stable ports: a `conveyor edge` process that outlives "
    "this server (started if none runs), or this process (production is down while it is) "
    "[default: detached; env: CONVEYOR_EDGE].",
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
    forwarded_allow_ips: str | None,
    body_limits: tuple[str, ...],
    max_connections: int | None,
    header_timeout: float,
    no_sandbox: bool,
    edge: str | None,
    log_level: str,
) -> None:
    """Serve the API on HOST:PORT (127.0.0.1:8080), with the engine and a runner inside."""
    import uvicorn

    from conveyor.sandbox import configure
    from conveyor.server.app import ServerConfig, create_app

    # Read once: what the server is given on the command line wins over its settings.
    settings = conveyor_settings()
    prometheus_url = prometheus_url or settings.prometheus_url
    forwarded_allow_ips = forwarded_allow_ips or settings.forwarded_allow_ips
    max_connections = max_connections or settings.max_connections
    edge = edge or settings.edge
    # First: a server that cannot sandbox pipeline code refuses to start (one line, the fix).
    sandbox = configure(disabled=no_sandbox, settings=settings)

    if not _loopback(host):
        click.echo(
            f"warning: listening on {host}, not only this machine; put TLS in front of it",
            err=True,
        )
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sinks = _sinks(cdevents_sinks, settings.cdevents_sinks)
    trusted = _trusted_proxies(forwarded_allow_ips)
    limits, webhook_limit = _body_limits(body_limits, settings.body_limits)
    listening = _listen(host, port)
    port = listening.getsockname()[1]  # the one chosen, with --port 0
    store = store_for()
    config = ServerConfig(
        runner_slots=os.cpu_count() or 2 if runner_slots is None else runner_slots,
        max_running_runs=max_runs,
        runner_labels=tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else None,
        delivery=deliver,
        prometheus_url=prometheus_url,
        cdevents_sinks=sinks,
        webhook_max_bytes=webhook_limit,
        body_limits=limits,
        sandbox=sandbox,
        edge=edge,
        settings=settings,
    )
    app = create_app(store, config)
    click.echo(f"conveyor server on http://{host}:{port}  (data: {store.home})", err=True)
    if sandbox.enabled:
        click.echo(f"sandbox: {sandbox.describe()}", err=True)
    else:
        log.warning("sandbox %s (--unsafe-no-sandbox or CONVEYOR_SANDBOX=off)", sandbox.describe())
    if sinks:
        # Hosts only: a sink's URL may carry a credential.
        hosts = ", ".join(urlsplit(url).netloc.rpartition("@")[2] for url in sinks)
        click.echo(f"CDEvents to {hosts}", err=True)
    if "*" in trusted:
        click.echo(
            "warning: X-Forwarded-For believed from anyone: any client picks the address its "
            "sign-ins are throttled by; name your proxies instead of *",
            err=True,
        )
    elif trusted:
        click.echo(f"X-Forwarded-For believed from {', '.join(trusted)} only", err=True)
    log.info("request body limits: %s", describe(limits, webhook_limit))
    connections = raise_fd_limit(max_connections)
    served_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # The standard asyncio loop, not uvloop: it spawns step processes several times faster.
        loop="asyncio",
        http=guarded_protocol(
            header_timeout=header_timeout,
            max_header_bytes=MAX_HEADER_BYTES,
            max_connections=connections,
        ),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: any local
        # process could then pick the address the sign-in throttle counts against.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "",
        # A stop is bounded: open connections (a browser's event stream) get this long, then
        # are closed. Production does not wait on it: the edge serves it (decision 0014).
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    # After uvicorn's Config, which sets up its loggers: every handler gets the limiter.
    rate_limit_logs(["", "uvicorn", "uvicorn.error", "uvicorn.access"])
    served = uvicorn.Server(served_config)
    with contextlib.suppress(KeyboardInterrupt):
        served.run(sockets=[listening])
    if not served.started:
        sys.exit(3)  # as uvicorn.run does: the socket could not be bound, or start-up failed
