"""One registry for what Conveyor can be extended with: deploy targets, checks, notifiers,
forges and connectors (which pull deployments and incidents from other tools). Each is a name,
a pydantic model of its options (what `conveyor.yml`, or for a connector the connectors file,
may say about it) and an implementation.

Built-ins are registered exactly as third-party extensions are: a module declares
``EXTENSION = Extension(...)`` (or ``EXTENSIONS = [...]``) and is found, for the built-ins, by
looking through the kind's package (``conveyor.checks``...), for plugins through the kind's
entry-point group (``conveyor.checks``...) whose entry points name such a module or an
`Extension` object. So adding a check is one module and its test; the pipeline loader
validates its options where they are written (with line numbers), and the JSON Schema and the
generated reference describe them.

This module imports no part of Conveyor: the packages it looks through are imported by name,
when the registry is first asked, so that their modules can themselves use the pipeline's
field types without an import cycle.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Extension",
    "ExtensionError",
    "Kind",
    "LoadProblem",
    "Options",
    "Registry",
    "registry",
]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


class ExtensionError(LookupError):
    """An unknown name, or an extension that cannot be registered (the message says which)."""


class Kind(enum.StrEnum):
    TARGET = "target"
    CHECK = "check"
    NOTIFIER = "notifier"
    FORGE = "forge"
    CONNECTOR = "connector"

    @property
    def package(self) -> str:
        """Where the built-ins of this kind live."""
        return _PACKAGES[self]

    @property
    def entry_point_group(self) -> str:
        """The entry-point group third-party packages register this kind under."""
        return _PACKAGES[self]


_PACKAGES = {
    Kind.TARGET: "conveyor.targets",
    Kind.CHECK: "conveyor.checks",
    Kind.NOTIFIER: "conveyor.notify",
    Kind.FORGE: "conveyor.forges",
    Kind.CONNECTOR: "conveyor.connectors",
}


class Options(BaseModel):
    """Base of every extension's options: unknown keys are mistakes, values do not change
    after loading, and a number where text is expected is taken as written."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    def explain(self) -> str:
        """One line for `conveyor explain`: the options that differ from their defaults."""
        shown = self.model_dump(exclude_defaults=True, by_alias=True)
        return ", ".join(f"{key} {value}" for key, value in shown.items())


@dataclass(frozen=True)
class Extension:
    """One extension. ``implementation`` is what the kind calls for: a `Target` subclass, an
    async check function, an async send function, a forge object; each kind's package says
    which, and checks it when it takes the extension from the registry. ``origin`` is where it
    came from (a module, or an entry point), for messages."""

    kind: Kind
    name: str
    options: type[BaseModel]
    implementation: Any
    summary: str = ""
    origin: str = ""
    #: Where it comes among the built-ins of its kind (lists, results and messages follow this
    #: order; equal orders by name).
    order: int = 100

    @property
    def description(self) -> str:
        """One line for the schema and the reference: the summary, else the options' docstring."""
        text = self.summary or (self.options.__doc__ or "")
        return " ".join(text.split())


@dataclass(frozen=True)
class LoadProblem:
    """A plugin that could not be loaded: the rest of Conveyor works without it."""

    kind: Kind
    origin: str
    message: str


class Registry:
    """Extensions by kind and name, in the order they were added (built-ins first)."""

    def __init__(self) -> None:
        self._by_kind: dict[Kind, dict[str, Extension]] = {kind: {} for kind in Kind}
        self.problems: list[LoadProblem] = []

    def add(self, extension: Extension) -> None:
        if not isinstance(extension, Extension):
            raise ExtensionError(f"{extension!r} is not a conveyor.extensions.Extension")
        if not NAME_PATTERN.fullmatch(extension.name):
            raise ExtensionError(
                f"{extension.kind} name {extension.name!r} must be lowercase letters, digits, "
                "'-' or '_', starting with a letter"
            )
        if not (isinstance(extension.options, type) and issubclass(extension.options, BaseModel)):
            raise ExtensionError(
                f"{extension.kind} {extension.name!r}: options must be a pydantic model class"
            )
        known = self._by_kind[extension.kind]
        if extension.name in known:
            earlier = known[extension.name].origin or "a built-in"
            raise ExtensionError(
                f"{extension.kind} {extension.name!r} from {extension.origin or '?'} is already "
                f"registered by {earlier}"
            )
        known[extension.name] = extension

    def get(self, kind: Kind, name: str) -> Extension:
        """The extension, or an ExtensionError that names the known ones."""
        known = self._by_kind[kind]
        if name not in known:
            names = ", ".join(known) or "none"
            raise ExtensionError(f"unknown {kind} {name!r} (known: {names})")
        return known[name]

    def of(self, kind: Kind) -> dict[str, Extension]:
        """Every extension of one kind, by name."""
        return dict(self._by_kind[kind])

    def names(self, kind: Kind) -> list[str]:
        return list(self._by_kind[kind])

    def __iter__(self) -> Iterator[Extension]:
        for known in self._by_kind.values():
            yield from known.values()


def declared(module: ModuleType) -> list[Extension]:
    """What a module declares: ``EXTENSION``, ``EXTENSIONS``, or nothing."""
    found: list[Extension] = []
    one = getattr(module, "EXTENSION", None)
    if one is not None:
        found.append(one)
    found.extend(getattr(module, "EXTENSIONS", ()))
    return found


def _with_origin(extensions: Iterable[Extension], origin: str) -> Iterator[Extension]:
    for extension in extensions:
        yield extension if extension.origin else replace(extension, origin=origin)


def _builtins(kind: Kind) -> list[Extension]:
    package = importlib.import_module(kind.package)
    found: list[Extension] = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{kind.package}.{info.name}")
            found += _with_origin(declared(module), module.__name__)
    return sorted(found, key=lambda e: (e.order, e.name))


def _plugins(kind: Kind, registry: Registry) -> Iterator[Extension]:
    for point in entry_points(group=kind.entry_point_group):
        origin = f"entry point {point.name!r} ({point.value})"
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin must not take Conveyor down
            registry.problems.append(LoadProblem(kind, origin, f"cannot be loaded: {exc}"))
            continue
        found = declared(loaded) if isinstance(loaded, ModuleType) else [loaded]
        for item in found:
            if not isinstance(item, Extension):
                message = f"names {item!r}, not a conveyor.extensions.Extension"
                registry.problems.append(LoadProblem(kind, origin, message))
                continue
            yield from _with_origin([item], origin)


def load(*, plugins: bool = True) -> Registry:
    """A registry of the built-ins, then (unless ``plugins`` is False) the installed plugins.
    A built-in that cannot be registered is a bug and raises; a plugin that cannot is recorded
    in ``problems`` and left out."""
    result = Registry()
    for kind in Kind:
        for extension in _builtins(kind):
            if extension.kind is not kind:
                raise ExtensionError(
                    f"{extension.origin} declares a {extension.kind} inside {kind.package}"
                )
            result.add(extension)
    if plugins:
        for kind in Kind:
            for extension in _plugins(kind, result):
                try:
                    if extension.kind is not kind:
                        raise ExtensionError(f"it is a {extension.kind}, registered as a {kind}")
                    result.add(extension)
                except ExtensionError as exc:
                    result.problems.append(LoadProblem(kind, extension.origin, str(exc)))
    return result


class _Process:
    """The process's registry, loaded on first use (one per process: extensions are code)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded: Registry | None = None
        self._loading = False

    def __call__(self) -> Registry:
        with self._lock:
            if self._loaded is None:
                if self._loading:  # a module being registered asked for it at import time
                    raise ExtensionError("the extension registry was asked for while it loads")
                self._loading = True
                try:
                    self._loaded = load()
                finally:
                    self._loading = False
            return self._loaded


registry = _Process()
