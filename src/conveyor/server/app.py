"""The ASGI application: REST API under /api/v1, webhooks, runner protocol, log streams, and
the background loops that move work forward (dispatcher, change intake, built-in runner)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import __version__
from conveyor.aio import wait_for
from conveyor.delivery.controller import DeliveryController
from conveyor.delivery.outbox import Outbox
from conveyor.edge.client import EdgeClient
from conveyor.engine.dispatch import (
    advance_runs,
    expire_leases,
    extend_running_leases,
    start_queued_runs,
)
from conveyor.errors import ConveyorError, NotFound, StaleLease
from conveyor.proc import stop_orphaned_steps, use_fast_child_watcher
from conveyor.runner.artifacts import ArtifactStore
from conveyor.runner.executor import RunnerSettings, SourceCache
from conveyor.runner.pool import RunnerPool
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.secrets import Secrets
from conveyor.server.hub import Hub
from conveyor.server.intake import ChangeRecorder
from conveyor.server.limits import BodyGuard, BodyLimits
from conveyor.sources.intake import process_pending, release_claims
from conveyor.states import IllegalTransition
from conveyor.store.db import Store
from conveyor.store.models import Service
from conveyor.store.private import private_dir
from conveyor.store.retention import PRUNE_SECONDS
from conveyor.store.vault import on_server_start, open_webhook_secret

log = logging.getLogger("conveyor.server")

# Background loops also poll this often, for work queued by other server processes.
POLL_SECONDS = 0.5
# How often the DORA summaries take in new facts and incidents (reports do it too).
DORA_SUMMARY_SECONDS = 10.0
# How long a service's webhook settings are reused before being read again.
SERVICE_CACHE_SECONDS = 2.0


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


class ServerState:
    """What the routes share: the store, the artifact store, the hub."""

    def __init__(self, store: Store, config: ServerConfig) -> None:
        # With PostgreSQL nothing else creates the data directory (artifacts, workspaces, and
        # the runners' source archives live there).
        private_dir(store.home)
        self.store = store
        self.config = config
        self.sandbox = config.sandbox if config.sandbox is not None else default_sandbox()
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


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if hint:
        body["error"]["hint"] = hint
    return JSONResponse(body, status_code=status)


async def _loop(
    name: str,
    step: Callable[[], object],
    wake: asyncio.Event,
    *,
    in_thread: bool = False,
    every: float = POLL_SECONDS,
) -> None:
    """Run `step` whenever woken or every `every` seconds; a failure is logged, not fatal.
    Steps that may wait on git or the network run in a thread, off the event loop."""
    while True:
        try:
            if in_thread:
                await asyncio.to_thread(step)
            else:
                step()
        except OperationalError as exc:
            # A full disk or a lost database: one line each time, not a traceback a second.
            log.error("%s failed: the store: %s; trying again", name, exc.orig)
        except Exception:
            log.exception("%s failed; trying again", name)
        await wait_for(wake, every)


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


def _prune(store: Store) -> None:
    from conveyor.delivery.retention import prune

    done = prune(store, warn=log.warning)
    for line in done.lines():
        if line != "nothing to remove":
            log.info("retention: %s", line)


def create_app(store: Store, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    state = ServerState(store, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        use_fast_child_watcher(asyncio.get_running_loop())
        hub = Hub(asyncio.get_running_loop())
        state.stopping = asyncio.Event()
        restore_signals = _on_exit_signal(asyncio.get_running_loop(), state.stopping.set)
        state.hub = hub
        unsubscribe = store.subscribe(hub.announce)
        await asyncio.to_thread(on_server_start, store, os.environ, log)
        if config.runner_slots > 0:
            # Before this server's runner starts: what a killed process of it left running.
            orphans = stop_orphaned_steps(store.home / "workspaces")
            if orphans:
                log.warning("stopped %d step process groups a previous run left behind", orphans)
        released = release_claims(store)
        if released:
            log.info("took back %d deliveries this server had claimed before it stopped", released)
        extended = extend_running_leases(store)
        if extended:
            log.info("gave %d running jobs a fresh lease after start-up", extended)
        tasks: list[asyncio.Task[None]] = []
        with (
            hub.listening("dispatch") as dispatch_wake,
            hub.listening("intake") as intake_wake,
            hub.listening("jobs") as jobs_wake,
            hub.listening("delivery") as delivery_wake,
            hub.listening("notify") as notify_wake,
        ):

            def dispatch() -> None:
                expire_leases(store)
                start_queued_runs(store, config.max_running_runs)
                advance_runs(store)

            def intake() -> None:
                if process_pending(store, store.home, prepare=state.sources.prepare):
                    hub.notify("dispatch")

            tasks.append(asyncio.create_task(state.changes.serve()))
            tasks.append(asyncio.create_task(_loop("dispatcher", dispatch, dispatch_wake)))
            tasks.append(asyncio.create_task(_loop("intake", intake, intake_wake, in_thread=True)))
            # --- polling: remote heads of services with a poll interval, and git hook spools
            from conveyor.sources.poll import poll_sources

            tasks.append(
                asyncio.create_task(
                    _loop(
                        "poll",
                        lambda: poll_sources(store, store.home),
                        asyncio.Event(),
                        in_thread=True,
                        every=1.0,
                    )
                )
            )
            # --- end polling
            # Retention of logs, artifacts and release bundles (conveyor.store.retention).
            tasks.append(
                asyncio.create_task(
                    _loop(
                        "retention",
                        lambda: _prune(store),
                        asyncio.Event(),
                        in_thread=True,
                        every=PRUNE_SECONDS,
                    )
                )
            )
            if config.delivery:
                state.delivery = DeliveryController(
                    store,
                    state.artifacts,
                    wake=delivery_wake,
                    prometheus_url=config.prometheus_url,
                    sandbox=state.sandbox,
                    edge=EdgeClient(store.home) if config.edge == "detached" else None,
                )
                tasks.append(asyncio.create_task(state.delivery.serve()))
                tasks.append(asyncio.create_task(Outbox(store, wake=notify_wake).serve()))
                # DORA reports served here only add days up: keep the summaries current.
                tasks.append(
                    asyncio.create_task(
                        _loop(
                            "DORA summary",
                            lambda: _keep_dora_summary_current(store),
                            asyncio.Event(),
                            in_thread=True,
                            every=DORA_SUMMARY_SECONDS,
                        )
                    )
                )
            if config.cdevents_sinks:
                from conveyor.delivery.cdevents import CDEventsSender

                sender = CDEventsSender(store, config.cdevents_sinks)
                tasks.append(asyncio.create_task(sender.serve()))
            if config.runner_slots > 0:
                settings = RunnerSettings(
                    workspaces=store.home / "workspaces",
                    artifacts=state.artifacts,
                    # None here: the pool gives each job the secrets it references.
                    secrets=Secrets(),
                    sources=state.sources,
                    sandbox=state.sandbox,
                )
                pool = RunnerPool(
                    store,
                    settings,
                    slots=config.runner_slots,
                    labels=list(config.runner_labels) if config.runner_labels else None,
                    wake=jobs_wake,
                )
                tasks.append(asyncio.create_task(pool.serve()))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                unsubscribe()
                restore_signals()
                state.hub = None

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description="Every commit to production, and the flow measured.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.conveyor = state
    # Outside every route: body limits hold before FastAPI reads a body (server/limits.py).
    app.add_middleware(BodyGuard)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", exc.message, exc.hint)

    @app.exception_handler(StaleLease)
    async def stale(request: Request, exc: StaleLease) -> JSONResponse:
        return error_response(409, "stale_lease", exc.message)

    @app.exception_handler(IllegalTransition)
    async def illegal(request: Request, exc: IllegalTransition) -> JSONResponse:
        # A writer acting on a state that has moved on (a runner reporting on a job it no
        # longer holds): a conflict the client must not retry, never a 500.
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(ConveyorError)
    async def conveyor_error(request: Request, exc: ConveyorError) -> JSONResponse:
        return error_response(400, "bad_request", exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            413: "too_large",
            429: "too_many_requests",
        }
        message = str(exc.detail)
        if isinstance(exc.__cause__, RecursionError):
            # FastAPI's "There was an error parsing the body", for JSON nested too deeply.
            message = "the JSON body is nested too deeply to be read"
        response = error_response(exc.status_code, code.get(exc.status_code, "error"), message)
        # Keep what the handler said besides the message (Retry-After, WWW-Authenticate).
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return error_response(422, "invalid_request", message)

    @app.exception_handler(OperationalError)
    async def store_failed(request: Request, exc: OperationalError) -> JSONResponse:
        # The disk is full, the data directory went read-only or the database is unreachable:
        # say so (503, nothing was recorded) instead of a bare 500 (the storage drills).
        log.error("%s %s: the store failed: %s", request.method, request.url.path, exc.orig)
        return error_response(
            503,
            "store_unavailable",
            f"the store could not be used, nothing was recorded: {exc.orig}",
            "check the free space and permissions of the data directory, or the database",
        )

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Input nested deeper than the code that walks it can follow: bad input, answered in
        # one log line, never a 500 with a traceback per request.
        log.warning("%s %s: refused input nested too deeply", request.method, request.url.path)
        return error_response(400, "bad_request", "the request is nested too deeply to be read")

    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: OverflowError) -> JSONResponse:
        # SQLite refuses integers past 64 bits when binding them: an id or a number that large
        # names nothing, it is bad input (found by the schemathesis drill).
        return error_response(422, "invalid_request", "a number in the request is out of range")

    from conveyor.server import alerts, delivery, dora, hooks, imports, metrics, runners, runs

    app.include_router(runs.router, prefix="/api/v1")
    app.include_router(delivery.router, prefix="/api/v1")
    app.include_router(dora.router, prefix="/api/v1")
    app.include_router(alerts.router, prefix="/api/v1")
    app.include_router(imports.router, prefix="/api/v1")
    # /metrics at the root, where Prometheus looks by default.
    app.include_router(metrics.router)
    app.include_router(hooks.router, prefix="/api/v1")
    app.include_router(runners.router, prefix="/api/v1")
    from conveyor.server import pipeline_secrets

    app.include_router(pipeline_secrets.router, prefix="/api/v1")
    from conveyor.server import timeline

    app.include_router(timeline.router, prefix="/api/v1")
    from conveyor.server import overview, session, stream

    app.include_router(session.router, prefix="/api/v1")
    app.include_router(stream.router, prefix="/api/v1")
    app.include_router(overview.router, prefix="/api/v1")
    from conveyor.server import inbox

    app.include_router(inbox.router, prefix="/api/v1")
    # The web UI last: `/`, the UI paths and /static/ (docs/decisions/0008-web-ui.md).
    from conveyor.server import web_ui as web

    app.include_router(web.router)
    return app
