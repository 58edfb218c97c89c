"""The connectors file: which tools the server pulls deployments and incidents from.

``CONVEYOR_CONNECTORS_FILE``, else ``connectors.yml`` in the data directory (beside
``users.yml``: the server's own configuration, not a pipeline's). Each entry names a connector
``type`` (an extension of kind ``connector``), how often it syncs (``every``, default 15m) and
that type's options, checked by its pydantic model; an error names the connector and field::

    connectors:
      shop-github:
        type: github
        every: 10m
        repository: acme/shop
        service: shop
        token_secret: GITHUB_TOKEN   # conveyor connectors secret shop-github GITHUB_TOKEN
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conveyor.connectors.base import ConnectorOptions, Source
from conveyor.errors import ConveyorError
from conveyor.extensions import ExtensionError, Kind, registry
from conveyor.spec.durations import DurationError, parse_duration

DEFAULT_EVERY = 15 * 60.0
# Syncing more often than this only spends the tool's rate limit.
MIN_EVERY = 60.0
CONNECTOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class Configured:
    """One connector of the file."""

    name: str
    type: str
    every: float
    options: ConnectorOptions
    source: Source


def connectors_file(home: Path, configured: Path | None = None) -> Path:
    return configured or home / "connectors.yml"


def load(path: Path) -> dict[str, Configured]:
    """The connectors of ``path`` by name (none when there is no file)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConveyorError(f"{path}: cannot be read: {exc}") from None
    entries = data.get("connectors") if isinstance(data, dict) else None
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ConveyorError(f"{path}: expected a mapping 'connectors:' of name → connector")
    return {str(name): _one(path, str(name), entry) for name, entry in entries.items()}


def _one(path: Path, name: str, entry: Any) -> Configured:
    where = f"{path}: connectors.{name}"
    if not CONNECTOR_NAME.fullmatch(name):
        raise ConveyorError(
            f"{where}: a connector name is lowercase letters, digits, '-' and '_' (at most 100)"
        )
    if not isinstance(entry, dict):
        raise ConveyorError(f"{where}: expected a mapping with a type and its options")
    given = dict(entry)
    kind = given.pop("type", None)
    known = registry().of(Kind.CONNECTOR)
    if not isinstance(kind, str) or kind not in known:
        raise ConveyorError(
            f"{where}.type: {kind!r} is not a connector type", hint=f"types: {', '.join(known)}"
        )
    try:
        every = parse_duration(given.pop("every", DEFAULT_EVERY))
    except DurationError as exc:
        raise ConveyorError(f"{where}.every: {exc}") from None
    if every < MIN_EVERY:
        raise ConveyorError(f"{where}.every: at least {MIN_EVERY:g}s between syncs")
    extension = known[kind]
    try:
        options = extension.options.model_validate(given)
    except ValidationError as exc:
        problems = [
            f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise ConveyorError("\n".join(problems)) from None
    if not isinstance(options, ConnectorOptions) or not isinstance(
        extension.implementation, Source
    ):
        raise ExtensionError(f"connector type {kind} ({extension.origin}) is not a connector")
    return Configured(name, kind, every, options, extension.implementation)
