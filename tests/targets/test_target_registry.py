"""Targets are found by name: the built-in ones, and third-party ones through entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.targets.base import Target, TargetError
from conveyor.targets.registry import target_class


def test_every_built_in_target_is_a_target() -> None:
    for name in ("process", "container", "ssh", "command"):
        found = target_class(name)
        assert issubclass(found, Target)
        assert found.name == name


def test_a_plugin_registered_as_an_entry_point_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real installed distribution on sys.path: its dist-info declares the entry point."""
    (tmp_path / "noop_target.py").write_text(
        textwrap.dedent(
            """
            from conveyor.targets.base import Instance, Target, TargetStatus

            class NoopTarget(Target):
                name = "noop"

                async def deploy(self, bundle, previous):
                    return Instance(bundle.release_id)

                async def rollback(self, failed, to, kept):
                    return Instance(to.release_id)

                async def status(self, instance):
                    return TargetStatus(True)

                def endpoint(self, instance):
                    return None
            """
        )
    )
    dist = tmp_path / "noop_target-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: noop-target\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[conveyor.targets]\nnoop = noop_target:NoopTarget\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        found = target_class("noop")
        assert found.__name__ == "NoopTarget"
        assert issubclass(found, Target)
    finally:
        sys.modules.pop("noop_target", None)


def test_an_unknown_target_names_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"unknown deploy target 'nosuch' \(known: .*process"):
        target_class("nosuch")
