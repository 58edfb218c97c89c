"""The rate limit as production writes it: "100/s" (the bug behind the demo's incident)."""

from __future__ import annotations

import unittest

from hello import app, settings


class RateLimitTest(unittest.TestCase):
    def test_plain_and_per_second(self) -> None:
        for value in ("100", "100/s"):
            current = settings.load({"RATE_LIMIT": value})
            assert app.greet(current)["settings"]["rate_limit"] == 100

    def test_other_units_are_refused(self) -> None:
        try:
            settings.load({"RATE_LIMIT": "100/min"})
        except ValueError:
            return
        raise AssertionError("RATE_LIMIT=100/min was accepted")


if __name__ == "__main__":
    unittest.main()
