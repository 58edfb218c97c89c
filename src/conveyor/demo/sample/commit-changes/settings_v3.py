"""The service's settings, read from its environment (each environment sets its own)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    environment: str
    greeting: str
    # Requests per second each client may make.
    rate_limit: int


def per_second(value: str) -> int:
    """A rate as people write it: "100" or "100/s"."""
    number, _, unit = value.strip().partition("/")
    if unit not in ("", "s"):
        raise ValueError(f"RATE_LIMIT {value!r}: only per second (N or N/s) is supported")
    return int(number)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    return Settings(
        environment=env.get("APP_ENV", "development"),
        greeting=env.get("GREETING", "Hello"),
        rate_limit=per_second(env.get("RATE_LIMIT", "50")),
    )
