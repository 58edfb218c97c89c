"""Serves the web UI: index.html for `/` and every UI path (the page's router takes over in the
browser), and the files under /static/. The API itself lives under /api/v1, elsewhere."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import Match, compile_path
from starlette.types import Scope

from conveyor.server.session import COOKIE, identity_from_cookie

router = APIRouter(include_in_schema=False)

# The UI's files ship in the package (conveyor/web/static), with no build step.
STATIC = Path(__file__).parents[1] / "web" / "static"
INDEX = STATIC / "index.html"

# No build step means no content-hashed file names, so a browser must revalidate every file
# (cheap: ETag / Last-Modified answer 304) or it would mix old and new modules after an upgrade.
CACHE = "no-cache"
# Only our own scripts run; styles may be set inline (SVG charts, graph layout).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
SECURITY_HEADERS = {
    "Cache-Control": CACHE,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _signed_in(request: Request) -> bool:
    value = request.cookies.get(COOKIE)
    if not value:
        return False
    return identity_from_cookie(request.app.state.conveyor.store, value) is not None


def _index(request: Request, *, public: bool = False, status: int = 200) -> Response:
    if not public and not _signed_in(request):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
    headers = dict(SECURITY_HEADERS)
    headers["Content-Security-Policy"] = CSP
    return FileResponse(INDEX, media_type=TYPES[".html"], headers=headers, status_code=status)


# Browsers drop tab, CR and LF from a URL and read a backslash as a slash, so "/\t/evil.example"
# is "//evil.example", another site. Spaces and other invisible characters have no place in a
# path of ours either.
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\\ufeff]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: `value` if it is a path on this site, else "/". The same
    rules as safeNext in static/lib/urls.js (which does the redirect; a test runs both)."""
    if not value or _BAD_ESCAPE.search(value):
        return "/"
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        return "/"
    for form in (value, decoded):
        if not form.startswith("/") or form.startswith("//") or _UNSAFE.search(form):
            return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path == "/signin" or parts.path.startswith("/signin/"):
        return "/"
    return value


@router.get("/signin")
def signin(request: Request) -> Response:
    wanted = request.query_params.get("next")
    if wanted is not None and safe_next(wanted) != wanted:
        # Off-site or malformed: the page is never shown with it, whatever its script does.
        return RedirectResponse("/signin", status_code=303)
    return _index(request, public=True)


# The UI's pages: each is index.html (for a signed-in user), and the page's router draws it.
PAGES = (
    "/",
    "/runs",
    "/runs/{run_id}",
    "/releases",
    "/releases/{release_id}",
    "/releases/{base_id}/compare/{head_id}",
    "/deployments",
    "/deployments/{deployment_id}",
    "/services/{service}/environments/{environment}",
    "/approvals",
    "/dora",
    "/teams",
    "/incidents",
    "/incidents/{incident_id}",
    "/inbox",
)


def page(request: Request) -> Response:
    return _index(request)


for _path in PAGES:
    router.add_api_route(_path, page, methods=["GET"])
# Where a trailing slash is dropped by a redirect (the UI's pages only, see unknown_page).
_PAGE_PATTERNS = [compile_path(p)[0] for p in (*PAGES, "/signin")]


class _UnknownPage(APIRoute):
    """Matches what no other route did, for a browser only: a GET of a path outside the API
    and /metrics (a scraper's "/metrics/" is still redirected). Anything else matches nothing,
    so the API's and other methods' answers stay as they were (a JSON 404, a 405 for a known
    path with another method)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("GET", "HEAD")
            or path in ("/api", "/metrics")
            or path.startswith(("/api/", "/static/", "/metrics/"))
        ):
            return Match.NONE, {}
        return super().matches(scope)


def unknown_page(request: Request) -> Response:
    """A human "page not found" (the shell draws it, with links back), answered as a 404. Shown
    signed in or not: it says nothing about what exists."""
    bare = request.url.path.rstrip("/")
    if bare != request.url.path and any(p.match(bare) for p in _PAGE_PATTERNS):
        # "/runs/" is "/runs", as the router's own slash redirect had it before this route.
        # Only to a page of ours: never "//elsewhere.example" from "//elsewhere.example/".
        target = quote(bare) + ("?" + request.url.query if request.url.query else "")
        return RedirectResponse(target, status_code=307)
    return _index(request, public=True, status=404)


def _etag(target: Path) -> str:
    stat = target.stat()
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


@router.get("/static/{path:path}")
def static(request: Request, path: str) -> Response:
    root = STATIC.resolve()
    target = (root / path).resolve()
    # Refuse anything outside static/ (.., symlinks) and anything that is not a plain file.
    if not target.is_relative_to(root) or not target.is_file() or target.name.startswith("."):
        raise HTTPException(404, f"no such file: /static/{path}")
    etag = _etag(target)
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    media = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
    return FileResponse(target, media_type=media or "application/octet-stream", headers=headers)


# Last of all the server's routes (server/app.py includes this router last).
router.add_api_route(
    "/{path:path}", unknown_page, methods=["GET", "HEAD"], route_class_override=_UnknownPage
)
