"""Finding a target by the name used in `deploy.target`, in the extension registry
(conveyor.extensions): the built-in ones (the modules of this package that declare
``EXTENSION``), then plugins registered under the ``conveyor.targets`` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from conveyor.extensions import Extension, ExtensionError, Kind, Registry, registry
from conveyor.targets.base import DEPLOY_KEYS, Target, TargetError, read_options

__all__ = [
    "DEPLOY_KEYS",
    "ENTRY_POINT_GROUP",
    "target_class",
    "target_extension",
    "target_options",
]

ENTRY_POINT_GROUP = Kind.TARGET.entry_point_group


def target_extension(name: str, *, extensions: Registry | None = None) -> Extension:
    """The target ``name`` as registered; a TargetError names the known ones otherwise, and
    the target plugins that could not be loaded. ``extensions``: the process's registry unless
    given."""
    known = registry() if extensions is None else extensions
    try:
        return known.get(Kind.TARGET, name)
    except ExtensionError:
        names = ", ".join(sorted(known.names(Kind.TARGET))) or "none"
        message = f"unknown deploy target {name!r} (known: {names})"
        broken = [f"{p.origin} {p.message}" for p in known.problems if p.kind is Kind.TARGET]
        if broken:
            message += "; target plugins left out: " + "; ".join(broken)
        raise TargetError(
            message,
            hint=f"a plugin's entry point in group {ENTRY_POINT_GROUP!r} names a module that "
            "declares EXTENSION = Extension(kind=Kind.TARGET, ...)"
            if broken
            else None,
        ) from None


def target_class(name: str, *, extensions: Registry | None = None) -> type[Target]:
    """The Target subclass for ``name``; a clear error names the known ones otherwise."""
    extension = target_extension(name, extensions=extensions)
    found: object = extension.implementation
    if not (isinstance(found, type) and issubclass(found, Target)):
        raise TargetError(
            f"deploy target {name!r} ({extension.origin or 'registered'}) is not a "
            "conveyor.targets.base.Target subclass"
        )
    return found


def target_options(
    name: str, options: Mapping[str, Any], *, extensions: Registry | None = None
) -> BaseModel:
    """The `deploy:` mapping of target ``name`` checked by its options model (the keys every
    target shares, `conveyor.spec.blocks.DEPLOY_KEYS`, left out); a TargetError names each
    key that is wrong and what it expects."""
    extension = target_extension(name, extensions=extensions)
    return read_options(extension.options, options, target=name)
