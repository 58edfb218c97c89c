"""Unit tests: the settings, and the service answering over real HTTP on a free port."""

from __future__ import annotations

import json
import threading
import unittest
import urllib.request

from hello import app, settings


class SettingsTest(unittest.TestCase):
    def test_defaults(self) -> None:
        current = settings.load({})
        assert current.environment == "development"
        assert current.greeting == "Hello"

    def test_environment_sets_them(self) -> None:
        current = settings.load({"APP_ENV": "staging", "GREETING": "Hi"})
        assert (current.environment, current.greeting) == ("staging", "Hi")


class ServiceTest(unittest.TestCase):
    def setUp(self) -> None:
        self.server = app.serve(0)
        # A short poll: shutdown() waits for the serving loop to notice.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def get(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:  # noqa: S310
            assert response.status == 200
            body: dict[str, object] = json.load(response)
            return body

    def test_greets(self) -> None:
        assert "Hello from" in str(self.get("/")["message"])

    def test_is_healthy(self) -> None:
        assert self.get("/healthz")["status"] == "ok"


if __name__ == "__main__":
    unittest.main()
