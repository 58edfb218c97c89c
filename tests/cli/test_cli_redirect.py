"""The CLI never follows a redirect: CONVEYOR_TOKEN goes only to the address CONVEYOR_URL names.
Two real HTTP servers on 127.0.0.1: one answers every request with a redirect to the other,
which records what reaches it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from tests.conftest import Conveyor

pytestmark = pytest.mark.integration


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def elsewhere() -> Iterator[http.server.HTTPServer]:
    _Recorder.seen = []
    server = _serve(_Recorder)
    yield server
    server.shutdown()
    server.server_close()


def test_a_redirect_is_refused_and_the_token_stays_home(
    conveyor: Conveyor, elsewhere: http.server.HTTPServer
) -> None:
    target = f"http://127.0.0.1:{elsewhere.server_address[1]}"

    class Redirector(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"{target}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    redirector = _serve(Redirector)
    try:
        conveyor.extra_env.update(
            CONVEYOR_URL=f"http://127.0.0.1:{redirector.server_address[1]}",
            CONVEYOR_TOKEN="cvy_secret_token",
        )
        result = conveyor("runs")
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert result.returncode == 1
    assert f"answered 307, a redirect to {target}/api/v1/runs" in result.stderr
    assert "hint: set CONVEYOR_URL to the server's own address" in result.stderr
    assert "Traceback" not in result.stderr
    assert _Recorder.seen == []  # nothing, and no token, reached the other address
