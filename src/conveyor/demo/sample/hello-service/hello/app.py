"""The web service: GET / greets, GET /healthz reports whether the settings are usable."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hello import settings


def greet(current: settings.Settings) -> dict[str, Any]:
    return {
        "message": f"{current.greeting} from {current.environment}!",
        "version": os.environ.get("CONVEYOR_RELEASE", "dev"),
        "settings": {k: v for k, v in vars(current).items() if k != "greeting"},
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path not in ("/", "/healthz"):
            self._send(404, {"error": f"no page {self.path}"})
            return
        try:
            current = settings.load()
        except ValueError as exc:
            self._send(500, {"status": "unhealthy", "error": f"bad settings: {exc}"})
            return
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "environment": current.environment})
        else:
            self._send(200, greet(current))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    server = serve(int(os.environ.get("PORT", "8000")))
    # SIGTERM (how Conveyor stops a release) ends the server cleanly.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"hello listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
