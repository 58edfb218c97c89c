"""Finding a target by the name used in `deploy.target`: the built-in ones, then plugins
registered under the ``conveyor.targets`` entry-point group."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from conveyor.targets.base import Target, TargetError

ENTRY_POINT_GROUP = "conveyor.targets"
BUILTIN = {
    "process": "conveyor.targets.process:ProcessTarget",
    "container": "conveyor.targets.container:ContainerTarget",
    "ssh": "conveyor.targets.ssh:SshTarget",
    "command": "conveyor.targets.command:CommandTarget",
}


def target_class(name: str) -> type[Target]:
    """The Target subclass for ``name``; a clear error names the known ones otherwise."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        found: object = getattr(importlib.import_module(module), attr)
    else:
        plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        if name not in plugins:
            known = ", ".join(sorted({*BUILTIN, *plugins}))
            raise TargetError(f"unknown deploy target {name!r} (known: {known})")
        try:
            found = plugins[name].load()
        except Exception as exc:  # a broken plugin must not take the server down
            raise TargetError(f"deploy target {name!r} could not be loaded: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Target)):
        raise TargetError(f"deploy target {name!r} is not a conveyor.targets.base.Target")
    return found
