"""How the API answers what went wrong: one JSON shape (``{"error": {"code", "message",
"hint"}}``) for every error, an expected one never a traceback or a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.errors import ConveyorError, NotFound, StaleLease
from conveyor.states import IllegalTransition

__all__ = ["EXCEPTION_HANDLERS", "error_response"]

log = logging.getLogger("conveyor.server")


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if hint:
        body["error"]["hint"] = hint
    return JSONResponse(body, status_code=status)


async def not_found(request: Request, exc: NotFound) -> JSONResponse:
    return error_response(404, "not_found", exc.message, exc.hint)


async def stale(request: Request, exc: StaleLease) -> JSONResponse:
    return error_response(409, "stale_lease", exc.message)


async def illegal(request: Request, exc: IllegalTransition) -> JSONResponse:
    # A writer acting on a state that has moved on (a runner reporting on a job it no
    # longer holds): a conflict the client must not retry, never a 500.
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(409, "conflict", str(exc))


async def conveyor_error(request: Request, exc: ConveyorError) -> JSONResponse:
    return error_response(400, "bad_request", exc.message, exc.hint)


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


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return error_response(422, "invalid_request", message)


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


async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
    # Input nested deeper than the code that walks it can follow: bad input, answered in
    # one log line, never a 500 with a traceback per request.
    log.warning("%s %s: refused input nested too deeply", request.method, request.url.path)
    return error_response(400, "bad_request", "the request is nested too deeply to be read")


async def out_of_range(request: Request, exc: OverflowError) -> JSONResponse:
    # SQLite refuses integers past 64 bits when binding them: an id or a number that large
    # names nothing, it is bad input (found by the schemathesis drill).
    return error_response(422, "invalid_request", "a number in the request is out of range")


# Starlette picks the handler of the nearest class in an exception's hierarchy.
EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    NotFound: not_found,
    StaleLease: stale,
    IllegalTransition: illegal,
    ConveyorError: conveyor_error,
    StarletteHTTPException: http_error,
    RequestValidationError: invalid,
    OperationalError: store_failed,
    RecursionError: too_deep,
    OverflowError: out_of_range,
}
