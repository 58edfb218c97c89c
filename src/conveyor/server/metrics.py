"""``GET /metrics``: Prometheus exposition of the store's figures (see conveyor.metrics.exposition).

No token by default, like most exporters: the server listens on 127.0.0.1 unless told
otherwise, and the figures are counts and durations (service and environment names, no secrets).
When ``CONVEYOR_METRICS_TOKEN`` is set, a scrape must send it as ``Authorization: Bearer
<token>`` (Prometheus: ``authorization: { credentials: ... }`` in the scrape config). It is a
token of its own, not an API token, so that a scrape credential grants nothing else.
"""

from __future__ import annotations

import hmac
import threading

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from conveyor.metrics.exposition import metrics_registry

router = APIRouter()

_AUTH_VARIABLE = "CONVEYOR_METRICS_TOKEN"
_lock = threading.Lock()


def _registry(request: Request) -> CollectorRegistry:
    """One registry per app (so per store), made at the first scrape: it keeps the history it
    has read, and later scrapes only read what is new."""
    app_state = request.app.state
    registry: CollectorRegistry | None = getattr(app_state, "metrics_registry", None)
    if registry is None:
        with _lock:
            registry = getattr(app_state, "metrics_registry", None)
            if registry is None:
                registry = metrics_registry(app_state.conveyor.store)
                app_state.metrics_registry = registry
    return registry


def _authorised(request: Request) -> bool:
    # CONVEYOR_METRICS_TOKEN, as the server read it at start.
    expected = request.app.state.conveyor.settings.metrics_token or ""
    if not expected:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    )


@router.get(
    "/metrics",
    tags=["server"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics (text format, or OpenMetrics when the scraper asks for it). Open
    unless CONVEYOR_METRICS_TOKEN is set; then that token is required as a bearer token."""
    if not _authorised(request):
        return Response(
            "missing or wrong metrics token: send Authorization: Bearer $CONVEYOR_METRICS_TOKEN\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="conveyor-metrics"'},
        )
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(_registry(request))
    return Response(body, media_type=content_type)
