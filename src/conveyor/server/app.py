"""The ASGI application: REST API under /api/v1, webhooks, runner protocol, log streams, and
the background loops that move work forward (dispatcher, change intake, built-in runner)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware

from conveyor import __version__
from conveyor.connectors.sync import CHECK_SECONDS as CONNECTORS_CHECK_SECONDS
from conveyor.connectors.sync import sync_due
from conveyor.delivery.cdevents import CDEventsSender
from conveyor.delivery.controller import DeliveryController
from conveyor.delivery.outbox import Outbox
from conveyor.edge.client import EdgeClient
from conveyor.engine.dispatch import (
    advance_runs,
    expire_leases,
    extend_running_leases,
    start_queued_runs,
)
from conveyor.errors import ConveyorError
from conveyor.proc import stop_orphaned_steps, use_fast_child_watcher
from conveyor.runner.artifacts import ArtifactStore
from conveyor.runner.executor import RunnerSettings, SourceCache
from conveyor.runner.pool import RunnerPool
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.secrets import Secrets
from conveyor.server import (
    alerts,
    compare,
    connectors,
    delivery,
    deployment_intake,
    dora,
    hooks,
    imports,
    inbox,
    metrics,
    overview,
    pipeline_secrets,
    portfolio,
    runners,
    runs,
    session,
    stream,
    teams,
    timeline,
    web_ui,
)
from conveyor.server.errors import EXCEPTION_HANDLERS
from conveyor.server.hub import Hub
from conveyor.server.intake import ChangeRecorder
from conveyor.server.limits import BodyGuard, BodyLimits
from conveyor.server.services import Service as Background
from conveyor.server.services import Supervisor, periodic
from conveyor.settings import Settings
from conveyor.sources.intake import process_pending, release_claims
from conveyor.sources.poll import poll_sources
from conveyor.store.db import Store
from conveyor.store.models import Service
from conveyor.store.private import private_dir
from conveyor.store.retention import PRUNE_SECONDS
from conveyor.store.vault import on_server_start, open_webhook_secret

log = logging.getLogger("conveyor.server")

# Background loops also poll this often, for work queued by other server processes.
API = "/api/v1"
POLL_SECONDS = 0.5
# How often the DORA summaries take in new facts and incidents (reports do it too).
DORA_SUMMARY_SECONDS = 10.0
# How long a service's webhook settings are reused before being read again.
SERVICE_CACHE_SECONDS = 2.0
# Smaller answers go as they are: compressing them saves less than a packet.
GZIP_MINIMUM_BYTES = 1400


@dataclass(frozen=True)
class ServerConfig:
    runner_slots: int = os.cpu_count() or 2
    max_running_runs: int = 8
    runner_labels: tuple[str, ...] | None = None
    # GitHub's own cap on a delivery; a larger one is never sent. Other bodies: body_limits.
    webhook_max_bytes: int = 25 * 2**20
    body_limits: BodyLimits = field(default_factory=BodyLimits)
    # Carry out deployments in this server process (one per cluster is enough; any may).
    delivery: bool = True
    # Where pipeline code (jobs, deploy commands, checks) runs; None: configured from the
    # environment (conveyor.sandbox), refusing to go on without one.
    sandbox: Sandbox | None = None
    # Who holds the environments' stable ports: "detached", a `conveyor edge` process that
    # outlives this server (started if none runs), or "embedded", this process (decision 0014).
    edge: str = "embedded"
    prometheus_url: str | None = None
    # HTTP endpoints that receive every run, deployment and incident as CDEvents (CloudEvents).
    cdevents_sinks: tuple[str, ...] = ()
    # Conveyor's settings (CONVEYOR_*); None: create_app reads them from the environment.
    settings: Settings | None = None


class ServerState:
    """What the routes share: the store, the artifact store, the hub."""

    def __init__(self, store: Store, config: ServerConfig, settings: Settings) -> None:
        # With PostgreSQL nothing else creates the data directory (artifacts, workspaces, and
        # the runners' source archives live there).
        private_dir(store.home)
        self.store = store
        self.config = config
        self.settings = settings
        self.sandbox = config.sandbox if config.sandbox is not None else default_sandbox(settings)
        self.artifacts = ArtifactStore(store.home / "artifacts")
        self.sources = SourceCache(store.home / "workspaces")
        self.hub: Hub | None = None
        # Set when the server is asked to stop: endless responses (the web UI's live stream)
        # end then, or the server would wait for browsers to close them.
        self.stopping = asyncio.Event()
        self.delivery: DeliveryController | None = None
        self.changes = ChangeRecorder(store)
        self._services: dict[str, tuple[float, Any]] = {}

    def service(self, name: str) -> Any:
        """A service's webhook settings, cached briefly: every delivery needs them."""
        now = time.monotonic()
        cached = self._services.get(name)
        if cached is not None and now - cached[0] < SERVICE_CACHE_SECONDS:
            return cached[1]
        with self.store.session() as session:
            svc = session.scalar(select(Service).where(Service.name == name))
            value = (
                None
                if svc is None
                else {
                    "secret": _open_webhook_secret(self.store, svc.webhook_secret, name),
                    "allow_unsigned": svc.allow_unsigned,
                }
            )
        self._services[name] = (now, value)
        return value

    def forget_service(self, name: str) -> None:
        """Drop a service's cached settings: it was just registered or changed here."""
        self._services.pop(name, None)

    def notify(self, channel: str) -> None:
        if self.hub is not None:
            self.hub.notify(channel)


def _open_webhook_secret(store: Store, stored: str | None, service: str) -> str | None:
    try:
        return open_webhook_secret(store, stored, service)
    except ConveyorError as exc:
        # The operator's problem (e.g. a lost key file): in the log, not in the forge's answer.
        log.error("webhook for %s: %s (%s)", service, exc.message, exc.hint or "")
        raise StarletteHTTPException(
            503, "the server cannot check webhook signatures now"
        ) from None


def _on_exit_signal(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None]:
    """Also call `callback` (on the loop) when SIGTERM or SIGINT asks the server to stop.

    uvicorn waits for every response to finish before it shuts the app down, and tells a
    streaming response nothing: this is how the live stream learns it must end. The handler
    that was there (uvicorn's) still runs. Returns a function that puts it back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(callback)
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def restore() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return restore


def _keep_dora_summary_current(store: Store) -> None:
    from conveyor.store.marks import summary_work

    with store.session() as session:
        if not summary_work(session):
            return
    from conveyor.metrics.summary import keep_current  # numpy: only once there is work

    keep_current(store)


def _prune(store: Store, settings: Settings) -> None:
    from conveyor.delivery.retention import prune

    done = prune(store, settings)
    for line in done.lines():
        if line != "nothing to remove":
            log.info("retention: %s", line)


# The hub's channels the background services wait on (server/hub.py).
WAKE_CHANNELS = ("dispatch", "intake", "jobs", "delivery", "notify")


def _background(state: ServerState, hub: Hub, wake: dict[str, asyncio.Event]) -> list[Background]:
    """The services this server runs, by its configuration: what `conveyor server` starts
    besides answering HTTP (docs/architecture.md). ``wake``: an event per WAKE_CHANNELS."""
    store, config, settings = state.store, state.config, state.settings

    def dispatch() -> None:
        expire_leases(store)
        start_queued_runs(store, config.max_running_runs)
        advance_runs(store)

    def intake() -> None:
        if process_pending(store, store.home, prepare=state.sources.prepare):
            hub.notify("dispatch")

    services = [
        Background("webhook intake", state.changes.serve),
        periodic("dispatcher", dispatch, wake=wake["dispatch"], every=POLL_SECONDS),
        periodic("intake", intake, wake=wake["intake"], every=POLL_SECONDS, in_thread=True),
        # Remote heads of services with a poll interval, and git hook spools.
        periodic("poll", lambda: poll_sources(store, store.home), every=1.0, in_thread=True),
        # Retention of logs, artifacts and release bundles (delivery.retention).
        periodic("retention", lambda: _prune(store, settings), every=PRUNE_SECONDS, in_thread=True),
        # The connectors of the connectors file, each when it is due (connectors.sync).
        periodic(
            "connectors",
            lambda: sync_due(store, settings.connectors_file),
            every=CONNECTORS_CHECK_SECONDS,
            in_thread=True,
        ),
    ]
    if config.delivery:
        state.delivery = DeliveryController(
            store,
            state.artifacts,
            wake=wake["delivery"],
            prometheus_url=config.prometheus_url or settings.prometheus_url,
            sandbox=state.sandbox,
            keep_bundles=settings.keep_bundles,
            edge=EdgeClient(store.home) if config.edge == "detached" else None,
        )
        services += [
            Background("delivery", state.delivery.serve),
            Background(
                "outbox",
                Outbox(
                    store,
                    wake=wake["notify"],
                    base_url=settings.base_url,
                    smtp_url=settings.smtp_url,
                    mail_from=settings.mail_from,
                ).serve,
            ),
            # DORA reports served here only add days up: keep the summaries current.
            periodic(
                "DORA summary",
                lambda: _keep_dora_summary_current(store),
                every=DORA_SUMMARY_SECONDS,
                in_thread=True,
            ),
        ]
    if config.cdevents_sinks:
        sender = CDEventsSender(store, config.cdevents_sinks, base_url=settings.base_url)
        services.append(Background("CDEvents", sender.serve))
    if config.runner_slots > 0:
        runner_settings = RunnerSettings(
            workspaces=store.home / "workspaces",
            artifacts=state.artifacts,
            # None here: the pool gives each job the secrets it references.
            secrets=Secrets(),
            sources=state.sources,
            sandbox=state.sandbox,
            conveyor=settings,
        )
        pool = RunnerPool(
            store,
            runner_settings,
            slots=config.runner_slots,
            labels=list(config.runner_labels) if config.runner_labels else None,
            wake=wake["jobs"],
            lease_seconds=settings.lease_seconds,
            log_ceiling=settings.log_store_limit,
        )
        services.append(Background("built-in runner", pool.serve))
    return services


def _recover(store: Store, config: ServerConfig, settings: Settings) -> None:
    """What a server does before it serves: take back what a killed process of it left."""
    on_server_start(store, settings.secrets_file, log)
    if config.runner_slots > 0:
        # Before this server's runner starts: what a killed process of it left running.
        orphans = stop_orphaned_steps(store.home / "workspaces")
        if orphans:
            log.warning("stopped %d step process groups a previous run left behind", orphans)
    released = release_claims(store)
    if released:
        log.info("took back %d deliveries this server had claimed before it stopped", released)
    extended = extend_running_leases(store, settings.lease_seconds)
    if extended:
        log.info("gave %d running jobs a fresh lease after start-up", extended)


# The API under /api/v1, /metrics at the root (where Prometheus looks by default), and the web
# UI last: `/`, the UI paths and /static/ (docs/decisions/0008-web-ui.md).
API_ROUTERS = (
    runs.router,
    delivery.router,
    dora.router,
    portfolio.router,
    teams.router,
    alerts.router,
    imports.router,
    deployment_intake.router,
    connectors.router,
    hooks.router,
    runners.router,
    pipeline_secrets.router,
    timeline.router,
    compare.router,
    session.router,
    stream.router,
    overview.router,
    inbox.router,
)
ROUTES: tuple[tuple[APIRouter, str], ...] = (
    *((router, API) for router in API_ROUTERS),
    (metrics.router, ""),
    (web_ui.router, ""),
)


def create_app(store: Store, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    # Read once, here (or by `conveyor server`, which hands them over): every part of the
    # server gets its settings from state.settings, none from the environment.
    settings = config.settings if config.settings is not None else Settings.from_env()
    state = ServerState(store, config, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        use_fast_child_watcher(loop)
        hub = Hub(loop)
        state.stopping = asyncio.Event()
        restore_signals = _on_exit_signal(loop, state.stopping.set)
        state.hub = hub
        unsubscribe = store.subscribe(hub.announce)
        await asyncio.to_thread(_recover, store, config, settings)
        supervisor = Supervisor()
        with contextlib.ExitStack() as listening:
            wake = {name: listening.enter_context(hub.listening(name)) for name in WAKE_CHANNELS}
            for service in _background(state, hub, wake):
                supervisor.start(service)
            # What exists now (modules, routes, models: ~150,000 objects) lives as long as the
            # server: kept out of the collector's full passes, which otherwise scan it each
            # time requests leave enough objects behind (40% of a 10,000-line log page's CPU).
            gc.freeze()
            try:
                yield
            finally:
                await supervisor.stop()
                unsubscribe()
                restore_signals()
                state.hub = None
                # Collectable again (an app started and stopped in one process: tests).
                gc.unfreeze()

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description="Every commit to production, and the flow measured.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.conveyor = state
    # Logs and long lists shrink 6-9x. Level 1: a 200 MB log goes through at ~150 MB/s (level
    # 9, the default, at ~10 MB/s would take longer than the read). Server-sent event streams
    # are left as they are (GZipMiddleware excludes text/event-stream: each event must reach
    # the browser when sent, not when a compressed block fills); so are artifacts and source
    # archives (mostly compressed already, fetched by runners that check their digests).
    app.add_middleware(
        GZipMiddleware,
        minimum_size=GZIP_MINIMUM_BYTES,
        compresslevel=1,
        exclude_content_types=(
            *DEFAULT_EXCLUDED_CONTENT_TYPES,
            "application/octet-stream",
            "application/x-tar",
        ),
    )
    # Outside every route: body limits hold before FastAPI reads a body (server/limits.py).
    app.add_middleware(BodyGuard)
    for router, prefix in ROUTES:
        app.include_router(router, prefix=prefix)
    return app
