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


def load(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    return Settings(
        environment=env.get("APP_ENV", "development"),
        greeting=env.get("GREETING", "Hello"),
        rate_limit=int(env.get("RATE_LIMIT", "50")),
    )
