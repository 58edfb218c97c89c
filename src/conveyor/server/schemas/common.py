"""What every answer model shares: the strict base, numbers, and the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ERRORS", "ErrorBody", "ErrorDetail", "Number", "Schema", "errors", "event_stream"]

# A figure that may be a whole or a fractional number: kept as it is (a float field would
# turn 3 into 3.0 on the way out).
Number = int | float


class Schema(BaseModel):
    """An answer's shape: every field named, none added (a field a view adds that is not here
    fails the response; see the package's docstring)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Schema):
    code: str = Field(
        description="Machine-readable: not_found, bad_request, invalid_request, unauthorized, "
        "forbidden, conflict, stale_lease, too_large, too_many_requests, store_unavailable, "
        "or a route's own (bad_payload, invalid_import, invalid_deployment, duplicate_delivery, "
        "misconfigured)."
    )
    message: str = Field(description="What went wrong, for a person.")
    hint: str | None = Field(None, description="What to do about it; left out when none.")
    errors: list[Any] | None = Field(
        None,
        description="POST /import (each naming its line) and POST /intake/deployments: "
        "every error found.",
    )


class ErrorBody(Schema):
    """Every error answer (server/errors.py): ``{"error": {"code", "message", "hint"}}``."""

    error: ErrorDetail
    delivery: str | None = Field(
        None, description="A replayed webhook delivery (409 duplicate_delivery): its id."
    )


_DESCRIPTIONS = {
    400: "Bad request: the request cannot be carried out as it is (the message says why).",
    401: "No credentials, or they are not valid (a bearer token or a session cookie).",
    403: "The token's scopes or limits do not allow this.",
    404: "Nothing by that name or id.",
    409: "Conflict with the current state (already decided, resolved, leased again...).",
    413: "The request body is larger than the server accepts.",
    422: "The request does not match its schema (the message names the field).",
    429: "Too many failed attempts: wait (Retry-After) before trying again.",
    503: "The store cannot be used now; nothing was recorded.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each with the error body's schema."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def event_stream(description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that answers with server-sent events."""
    return {
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": description,
        }
    }


# What any authenticated API route may answer besides its own result.
ERRORS = errors(400, 401, 403, 422)
