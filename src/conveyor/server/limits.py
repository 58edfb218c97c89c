"""Request bodies: how large each kind of route accepts, enforced before anything parses one.

FastAPI reads a route's JSON body before it runs the route's dependencies, token check
included, so without this an anonymous client could make the server buffer whatever it sends
before the 401. `BodyGuard`, an ASGI middleware in front of every route, decides first:

- A request without a body, or with a declared one small enough (PRECHECK_BYTES, which uvicorn
  has buffered before the app sees the request anyway), passes untouched: the common case
  costs a header scan.
- For a larger or chunked body, the checks run when something first reads it, by which time
  the router has matched the route. If the route needs a token, the route's own token
  dependency runs first: an unauthenticated request is answered 401/403 without one byte of
  its body read. A forge webhook without the signature its service requires is refused as
  early (the signature itself covers the body, so it can only be checked after reading).
- A declared length over the route's limit is answered 413 at once; a body that grows past it
  while it is read (chunked, or lying about its length) is refused with 413 then.
- Bodies whose sender is not known yet (forge webhooks before their signature is checked,
  sign-in, Slack actions) share one budget across requests, so that many at once cannot add
  up past it either: 503 with Retry-After beyond it.

Refusals, and any answer given before the body was read to its end, carry `Connection: close`:
the client may still be sending, and reading the rest just to keep the connection would be the
work the refusal saves.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.spec.durations import DurationError, format_size, parse_size

log = logging.getLogger("conveyor.server.limits")

KIB, MIB, GIB = 2**10, 2**20, 2**30
# uvicorn reads this much of a body into memory before it applies back-pressure: below it a
# pre-check would save nothing (and would cost a second token look-up per request).
PRECHECK_BYTES = 64 * KIB
CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class BodyLimits:
    """The largest body each kind of route accepts (the webhook limit is
    ServerConfig.webhook_max_bytes, which predates these)."""

    api: int = MIB
    # A runner's batch of reports: up to 10,000 log lines of up to 16 KiB each.
    runner: int = 256 * MIB
    # Streamed to disk as it arrives, never held in memory.
    artifact: int = 2 * GIB
    imports: int = 64 * MIB
    # All bodies of not-yet-authenticated senders being read at one time, together.
    unauthenticated: int = 32 * MIB


# What the operator writes (`--body-limit import=128MB`) → the field it sets.
KINDS = {
    "api": "api",
    "webhook": "webhook",
    "runner": "runner",
    "artifact": "artifact",
    "import": "imports",
    "unauthenticated": "unauthenticated",
}
# Routes whose bodies are not API JSON, by endpoint; every other route is "api".
ROUTE_KINDS = {
    "conveyor.server.hooks.forge_hook": "webhook",
    "conveyor.server.alerts.alertmanager_hook": "webhook",
    "conveyor.server.runners.reports": "runner",
    "conveyor.server.runners.upload_artifact": "artifact",
    "conveyor.server.imports.import_file": "imports",
}
WHAT = {
    "api": "API requests",
    "webhook": "webhooks",
    "runner": "runner reports",
    "artifact": "artifacts",
    "imports": "imports (split the file)",
}


def parse_limits(given: Iterable[str], limits: BodyLimits, webhook: int) -> tuple[BodyLimits, int]:
    """`KIND=SIZE` settings (`webhook=50MB`) applied to ``limits`` and the webhook limit;
    ValueError with a message for the user on anything else."""
    changes: dict[str, int] = {}
    for item in given:
        kind, sep, size = item.partition("=")
        field = KINDS.get(kind.strip().lower())
        if not sep or field is None:
            raise ValueError(f"{item!r}: give KIND=SIZE with KIND one of {', '.join(KINDS)}")
        try:
            changes[field] = parse_size(size.strip())
        except DurationError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
    webhook = changes.pop("webhook", webhook)
    return replace(limits, **changes), webhook


def describe(limits: BodyLimits, webhook: int) -> str:
    sizes = {f.name: getattr(limits, f.name) for f in fields(limits)} | {"webhook": webhook}
    return ", ".join(f"{kind} {format_size(sizes[field])}" for kind, field in KINDS.items())


@dataclass(frozen=True)
class _Route:
    kind: str
    # The route's token dependency, called as FastAPI would; None: the route needs no token.
    auth: Callable[..., Any] | None
    # Refuses from the headers alone what the route would refuse after reading the body.
    early: Callable[[Request, Mapping[str, Any]], Awaitable[None]] | None = None


class BodyGuard:
    """The ASGI middleware described in the module's docstring.

    The route is known only once the router has matched it: Starlette records it in the
    request's scope (``route``, ``endpoint``, ``path_params``) before the route runs, and
    anything that reads the body (FastAPI's parsing, a route's own loop) does so through
    ``receive``. So the checks run at the first ``receive``, before a byte is handed over."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[int, tuple[Any, _Route]] = {}
        # Bytes of not-yet-authenticated bodies being read right now, across requests.
        self.unauthenticated_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared(scope["headers"])
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        config = scope["app"].state.conveyor.config
        limits: BodyLimits = config.body_limits
        smallest = min(limits.api, limits.runner, limits.imports, config.webhook_max_bytes)
        if not chunked and length is not None and length <= min(PRECHECK_BYTES, smallest):
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send, length)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, length: int | None
    ) -> None:
        config = scope["app"].state.conveyor.config
        limit = 0
        kind = "api"
        checked = False
        budgeted = True
        counted = 0
        held = 0
        complete = False

        async def check() -> None:
            nonlocal limit, kind, budgeted, checked
            route = self._route(scope.get("route"))
            kind = route.kind
            limit = (
                config.webhook_max_bytes if kind == "webhook" else getattr(config.body_limits, kind)
            )
            if length is None or length > PRECHECK_BYTES:
                await _early(route, Request(scope), scope.get("path_params") or {})
            if length is not None and length > limit:
                raise _too_large(limit, kind)
            # A route whose token was checked reads an authenticated sender's body.
            budgeted = route.auth is None
            checked = True

        async def guarded_receive() -> Message:
            nonlocal counted, held, complete
            if not checked:
                await check()
            message = await receive()
            if message["type"] != "http.request":
                return message
            complete = not message.get("more_body", False)
            size = len(message.get("body", b""))
            counted += size
            if counted > limit:
                raise _too_large(limit, kind)
            if budgeted and size:
                held += size
                self.unauthenticated_bytes += size
                budget = config.body_limits.unauthenticated
                if self.unauthenticated_bytes > budget:
                    log.warning(
                        "refused a body: %s bytes of unauthenticated bodies are being read "
                        "already (limit %s)",
                        self.unauthenticated_bytes - size,
                        budget,
                    )
                    raise HTTPException(
                        503,
                        "the server is reading too many unauthenticated request bodies at "
                        "once: try again shortly",
                        headers={"Retry-After": "1", **CLOSE},
                    )
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                # Answered before the body was read (a 401 from a token dependency, a 404):
                # closing spares reading the rest only to keep the connection.
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, closing_send)
        finally:
            self.unauthenticated_bytes -= held

    def _route(self, route: Any) -> _Route:
        # By identity (routes are not hashable); the route is kept, so its id stays its own.
        found = self._routes.get(id(route))
        if found is None:
            if len(self._routes) > 10_000:  # routes are made once; never let this grow anyway
                self._routes.clear()
            found = self._routes[id(route)] = (route, _describe(route))
        return found[1]


def _declared(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked)."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # the protocol layer refuses these; count what arrives
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


def _too_large(limit: int, kind: str) -> HTTPException:
    return HTTPException(
        413,
        f"the request body is larger than {format_size(limit)} ({limit} bytes), this server's "
        f"limit for {WHAT.get(kind, kind)}",
        headers=CLOSE,
    )


async def _early(route: _Route, request: Request, params: Mapping[str, Any]) -> None:
    """Raise the refusal the route would give once it had read the body, before."""
    try:
        if route.auth is not None:
            from conveyor.server.auth import bearer

            credentials = await bearer(request)
            await run_in_threadpool(route.auth, request, credentials)
        if route.early is not None:
            await route.early(request, params)
    except StarletteHTTPException as exc:
        # The client may be sending still: answer, then close rather than read the rest.
        raise HTTPException(exc.status_code, exc.detail, {**(exc.headers or {}), **CLOSE}) from None


async def _forge_early(request: Request, params: Mapping[str, Any]) -> None:
    """A forge webhook the route would refuse with 401 whatever its body holds: no signature
    header where one is required. An unknown service is treated as one with a secret nobody
    knows, as the route does, so the answer (and its timing) tells nobody which services
    exist; a signature that is present is checked by the route, over the body."""
    from conveyor.forges import WebhookRejected, known, refuse_before_body
    from conveyor.server.hooks import UNSIGNED

    forge, service = str(params.get("forge")), str(params.get("service"))
    if not known(forge):
        return  # the route's own 404
    settings = await run_in_threadpool(request.app.state.conveyor.service, service)
    try:
        refuse_before_body(
            forge,
            request.headers,
            secret=settings["secret"] if settings else "unknown service",
            allow_unsigned=bool(settings and settings["allow_unsigned"]),
        )
    except WebhookRejected as exc:
        why = exc.message if settings is not None else f"there is no service {service!r}"
        log.warning(
            "%s webhook for %s refused before its body was read (%d): %s",
            forge,
            service,
            exc.status,
            why,
        )
        raise HTTPException(exc.status, UNSIGNED if exc.status == 401 else exc.message) from None


EARLY = {"conveyor.server.hooks.forge_hook": _forge_early}


def _describe(route: Any) -> _Route:
    """What BodyGuard needs to know of a route (anything but an APIRoute: a plain API one)."""
    if not isinstance(route, APIRoute):
        return _Route(kind="api", auth=None)
    name = f"{route.endpoint.__module__}.{route.endpoint.__name__}"
    return _Route(
        kind=ROUTE_KINDS.get(name, "api"), auth=_token_check(route), early=EARLY.get(name)
    )


def _token_check(route: APIRoute) -> Callable[..., Any] | None:
    """The route's `auth.require(...)` dependency, if it has one we can call as
    ``check(request, credentials)``; None otherwise (the body is then read before the token
    is checked, as FastAPI does, but still within the limit and the budget)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        call = dependency.call
        if getattr(call, "__module__", None) == "conveyor.server.auth" and call is not None:
            try:
                names = list(inspect.signature(call).parameters)
            except (TypeError, ValueError):  # pragma: no cover
                return None
            return call if names == ["request", "credentials"] else None
        pending.extend(dependency.dependencies)
    return None
