"""The one extension registry: built-ins found in their packages, plugins through real entry
points (a dist-info folder on the path, read by importlib.metadata), each validated where the
pipeline file writes it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.extensions import Extension, ExtensionError, Kind, Options, Registry, load

PLUGIN = '''
from pydantic import Field

from conveyor.checks.base import CheckOptions, CheckResult, Outcome, check


class DiskCheck(CheckOptions):
    """Healthy while the disk has room."""

    free: int = Field(ge=1, description="Megabytes that must be free.")


async def run(options, context):
    return CheckResult("disk", Outcome.PASS, f"{options.free} MB free")


EXTENSION = check("disk", DiskCheck, run)
'''

PIPELINE = """
service: shop
jobs: {build: {run: make}}
environments:
  production:
    health:
      disk: {free: %s}
"""


def install_plugin(root: Path, group: str, target: str, module: str = PLUGIN) -> Path:
    """A package the way pip leaves one: the module and a dist-info naming its entry point."""
    (root / "shop_checks.py").write_text(textwrap.dedent(module))
    info = root / "shop_checks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-checks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{target}\n")
    return root


def run_python(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_the_built_ins_register_from_their_own_modules() -> None:
    registry = load(plugins=False)
    assert registry.names(Kind.CHECK)[:4] == ["http", "command", "prometheus", "tcp"]
    assert registry.names(Kind.NOTIFIER) == ["slack", "webhook", "email", "inbox"]
    assert registry.get(Kind.CHECK, "tcp").origin == "conveyor.checks.tcp"
    assert not registry.problems


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ExtensionError, match=r"unknown check 'htp' \(known: http, command, "):
        load(plugins=False).get(Kind.CHECK, "htp")


def test_a_name_is_registered_once_and_spelled_simply() -> None:
    registry = Registry()
    registry.add(Extension(Kind.CHECK, "disk", Options, object(), origin="one"))
    with pytest.raises(ExtensionError, match="already registered by one"):
        registry.add(Extension(Kind.CHECK, "disk", Options, object(), origin="two"))
    with pytest.raises(ExtensionError, match="must be lowercase"):
        registry.add(Extension(Kind.CHECK, "Disk Space", Options, object()))
    with pytest.raises(ExtensionError, match="must be a pydantic model class"):
        registry.add(Extension(Kind.CHECK, "space", dict, object()))  # type: ignore[arg-type]


def test_a_plugin_check_is_validated_where_written_and_documented(tmp_path: Path) -> None:
    root = install_plugin(tmp_path, "conveyor.checks", "disk = shop_checks")
    result = run_python(
        f"""
        import json
        from conveyor.spec import PipelineError, parse_pipeline, pipeline_json_schema
        ok = parse_pipeline({PIPELINE % 100!r})
        print(json.dumps(list(ok.environments["production"].health.configured())))
        try:
            parse_pipeline({PIPELINE % 0!r})
        except PipelineError as exc:
            print(json.dumps([str(p) for p in exc.problems]))
        schema = pipeline_json_schema()
        print(json.dumps(sorted(schema["$defs"]["Health"]["properties"])))
        """,
        root,
    )
    assert result.returncode == 0, result.stderr
    configured, problems, schema = (json.loads(line) for line in result.stdout.splitlines())
    assert configured == ["disk"]
    assert problems == [
        "conveyor.yml:7:20: environments.production.health.disk.free: must be at least 1, got 0"
    ]
    assert schema == ["command", "disk", "http", "prometheus", "tcp"]


def test_a_broken_plugin_is_reported_and_the_rest_still_loads(tmp_path: Path) -> None:
    root = install_plugin(
        tmp_path, "conveyor.checks", "disk = shop_checks", module="raise ImportError('no disk')"
    )
    result = run_python(
        """
        from conveyor.extensions import Kind, load
        registry = load()
        print(registry.names(Kind.CHECK))
        print([p.message for p in registry.problems])
        """,
        root,
    )
    assert result.returncode == 0, result.stderr
    names, problems = result.stdout.splitlines()
    assert names == "['http', 'command', 'prometheus', 'tcp']"
    assert problems == "['cannot be loaded: no disk']"


def test_a_plugin_named_like_a_key_of_a_block_is_left_out_of_that_block_only(
    tmp_path: Path,
) -> None:
    root = install_plugin(
        tmp_path,
        "conveyor.checks",
        "interval = shop_checks",
        PLUGIN.replace('"disk"', '"interval"'),
    )
    result = run_python(
        f"""
        from conveyor.extensions import registry
        from conveyor.spec import parse_pipeline
        from conveyor.spec.models import Monitor
        text = {PIPELINE.replace("disk:", "interval:") % 5!r}
        health = parse_pipeline(text).environments["production"].health
        print(list(health.configured()))
        print(Monitor.of(interval=30).interval)
        print([p.message for p in registry().problems])
        """,
        root,
    )
    assert result.returncode == 0, result.stderr
    configured, interval, problems = result.stdout.splitlines()
    assert configured == "['interval']"
    assert interval == "30.0"
    assert problems == "[\"its name clashes with the key 'interval' of Monitor; left out there\"]"
