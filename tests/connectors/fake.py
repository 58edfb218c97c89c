"""A stand-in for the APIs of GitHub, GitLab, Argo CD, PagerDuty and Opsgenie, which cannot run
here: a real HTTP server on 127.0.0.1 that answers the documented requests with stored
responses (tests/connectors/fixtures/). Those are the providers' own published example
responses, or built to their published schemas where they publish no example, with ids,
times and names changed to each test's scenario; none was captured from a live account.
fixtures/README.md names each source, and test_connector_fixtures.py checks every stored
response against it.

It refuses a request without the expected authentication header (401, the tool's documented
error body), answers 404 to any request it was not told about (so a connector asking for
something else fails the test), and keeps every request, so that tests check the pagination
and the incremental query parameters a connector sends.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"


def sha(n: int) -> str:
    """The id of commit ``n`` of the stored histories."""
    return hashlib.sha1(f"commit {n}".encode(), usedforsecurity=False).hexdigest()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request], Reply]


@dataclass
class FakeApi:
    """Routes by exact path; ``auth`` is the (header, value) every request must carry."""

    auth: tuple[str, str]
    refused: Any
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def route(self, path: str, reply: Route | Any) -> None:
        self.routes[path] = reply if callable(reply) else (lambda _req, r=reply: Reply(r))

    def asked(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def answer(self, request: Request) -> Reply:
        header, value = self.auth
        if request.headers.get(header.lower()) != value:
            return Reply(self.refused, 401)
        route = self.routes.get(request.path)
        if route is None:
            return Reply({"message": "Not Found"}, 404)
        return route(request)


@contextmanager
def serving(api: FakeApi) -> Iterator[FakeApi]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            request = Request(
                parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
            )
            api.requests.append(request)
            reply = api.answer(request)
            body = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in reply.headers.items():
                self.send_header(key, value.replace("{base}", api.url))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


PAGERDUTY_TOKEN = "u+recorded0123456789"


def pagerduty(answer: str = "later") -> FakeApi:
    """PagerDuty's incidents list answering the stored page ``incidents_<answer>.json``."""
    api = FakeApi(("Authorization", f"Token token={PAGERDUTY_TOKEN}"), {"error": {"code": 2006}})
    api.route("/incidents", lambda _r: Reply(fixture(f"pagerduty/incidents_{answer}.json")))
    return api


def pagerduty_entry(url: str, extra: str = "") -> str:
    """The connectors file's entry ``pagerduty`` for a PagerDuty at ``url`` (service PSHOP01 is
    shop), ``extra`` lines added."""
    return (
        "  pagerduty:\n"
        "    type: pagerduty\n"
        f"    api_url: {url}\n"
        "    token_secret: PAGERDUTY_TOKEN\n"
        "    services: {PSHOP01: shop}\n" + extra
    )
