"""Deploy targets as extensions: each built-in declares a pydantic model of its `deploy:` options
and registers in the one extension registry (conveyor.extensions), as plugins do through the
``conveyor.targets`` entry-point group."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conveyor.extensions import Kind, Options, Registry, load, registry
from conveyor.targets.base import DEPLOY_KEYS, Instance, Target, TargetContext, TargetError
from conveyor.targets.command import CommandOptions
from conveyor.targets.container import ContainerOptions
from conveyor.targets.process import ProcessOptions, ProcessTarget
from conveyor.targets.registry import target_class, target_options
from conveyor.targets.ssh import SshOptions

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = {
    "process": ProcessOptions,
    "container": ContainerOptions,
    "ssh": SshOptions,
    "command": CommandOptions,
}

# Every option of each target, written as a user would in conveyor.yml.
DOCUMENTED = """
process:
  target: process
  start: python -m shop_api --port $PORT
  strategy: blue-green
  port: 8080
  ready_timeout: 1m
  stop_timeout: 5
  drain_timeout: 0
container:
  target: container
  image: registry.example.com/team/app@sha256:0123456789abcdef
  engine: docker
  tls_verify: false
  strategy: recreate
  port: 8081
  args: ["--memory", "256m"]
  command: [serve, --workers, "2"]
  init: false
  ready_timeout: 45s
  stop_timeout: 0
  drain_timeout: 10s
  pull_timeout: 5m
ssh:
  target: ssh
  hosts:
    - deploy@10.0.0.5
    - {host: "ops@[::1]:2200", path: /srv/web}
  identity: ~/.ssh/deploy_ed25519
  known_hosts: ~/.ssh/known_hosts
  path: apps/web
  install: pip install --quiet dist/*.whl
  restart: sudo systemctl restart web
  status: systemctl is-active web
  url: https://web.example.com
  connect_timeout: 5
  timeout: 120.5
command:
  target: command
  deploy: helm upgrade --install web chart --set image=$CONVEYOR_IMAGE
  rollback: helm rollback web
  status: kubectl rollout status deploy/web --timeout 10s
  url: https://web.example.com
  timeout: 900
"""


def deploy_blocks(path: Path) -> Iterator[dict[str, Any]]:
    pipeline = yaml.safe_load(path.read_text())
    for environment in (pipeline.get("environments") or {}).values():
        if isinstance(environment, dict) and "deploy" in environment:
            yield environment["deploy"]


# --- the options models -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline",
    [
        ROOT / "examples" / "shop-api" / "conveyor.yml",
        ROOT / "src" / "conveyor" / "demo" / "sample" / "hello-service" / "conveyor.yml",
    ],
    ids=lambda p: p.parent.name,
)
def test_the_examples_deploy_blocks_are_accepted(pipeline: Path) -> None:
    blocks = list(deploy_blocks(pipeline))
    assert blocks
    for block in blocks:
        name = block.get("target", "process")
        assert isinstance(target_options(name, block), BUILT_IN[name])


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_documented_option_is_accepted(name: str) -> None:
    block = yaml.safe_load(DOCUMENTED)[name]
    options = target_options(name, block)
    assert isinstance(options, BUILT_IN[name])
    assert set(block) - DEPLOY_KEYS == set(type(options).model_fields)


def test_the_docs_list_every_option_of_every_target() -> None:
    """The options column of the targets table in docs/delivery.md names each model's fields."""
    rows = {}
    for line in (ROOT / "docs" / "delivery.md").read_text().splitlines():
        found = re.match(r"\| `([a-z]+)`[^|]*\|.*\|(.*)\|$", line)
        if found and found[1] in BUILT_IN:
            rows[found[1]] = set(re.findall(r"`([a-z_]+)`", found[2])) - DEPLOY_KEYS
    assert set(rows) == set(BUILT_IN)
    for name, model in BUILT_IN.items():
        assert rows[name] == set(model.model_fields), name


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_json_schema_agrees_with_the_model(name: str) -> None:
    """What the model accepts, an editor using the schema accepts; what it refuses for its
    type or an unknown key, the schema refuses too."""
    schema = BUILT_IN[name].model_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    block = yaml.safe_load(DOCUMENTED)[name]
    own = {k: v for k, v in block.items() if k not in DEPLOY_KEYS}
    assert list(validator.iter_errors(own)) == []
    assert list(validator.iter_errors({**own, "no_such_option": 1}))
    if name == "ssh":
        assert list(validator.iter_errors({"hosts": "deploy@10.0.0.5"})) == []
        assert list(validator.iter_errors({"hosts": []}))


def test_values_are_read_as_the_target_uses_them() -> None:
    blocks = yaml.safe_load(DOCUMENTED)
    process = target_options("process", blocks["process"])
    assert isinstance(process, ProcessOptions)
    assert (process.port, process.ready_timeout, process.drain_timeout) == (8080, 60.0, 0.0)
    container = target_options("container", blocks["container"])
    assert isinstance(container, ContainerOptions)
    assert container.args == ("--memory", "256m")
    assert container.command == ("serve", "--workers", "2")
    assert (container.stop_timeout, container.pull_timeout) == (0.0, 300.0)
    ssh = target_options("ssh", blocks["ssh"])
    assert isinstance(ssh, SshOptions)
    assert [(h.host, h.path) for h in ssh.hosts] == [
        ("deploy@10.0.0.5", None),
        ("ops@[::1]:2200", "/srv/web"),
    ]
    # One host may be written alone, without a list.
    one = target_options("ssh", {"hosts": "deploy@10.0.0.5"})
    assert isinstance(one, SshOptions)
    assert [h.host for h in one.hosts] == ["deploy@10.0.0.5"]


def test_defaults_are_those_the_targets_always_had() -> None:
    process = ProcessOptions()
    assert (process.port, process.ready_timeout, process.stop_timeout, process.drain_timeout) == (
        None,
        30.0,
        5.0,
        10.0,
    )
    container = ContainerOptions()
    assert (container.engine, container.tls_verify, container.init) == ("podman", True, True)
    assert (container.stop_timeout, container.pull_timeout, container.args) == (10.0, 300.0, ())
    ssh = SshOptions.model_validate({"hosts": ["a"]})
    assert (ssh.connect_timeout, ssh.timeout, ssh.known_hosts) == (
        10.0,
        600.0,
        "~/.ssh/known_hosts",
    )
    assert CommandOptions(deploy="./deploy.sh").timeout == 600.0


@pytest.mark.parametrize(
    ("name", "options", "words"),
    [
        # Unknown keys, named, with the near miss when there is one.
        ("process", {"start": "x", "prot": 8080}, r"deploy\.prot is not an option of the process"),
        ("container", {"iamge": "x"}, r"deploy\.iamge is not an option of the container"),
        ("ssh", {"hosts": ["a"], "user": "deploy"}, r"deploy\.user is not an option of the ssh"),
        ("command", {"deploy": "x", "cmd": "y"}, r"deploy\.cmd is not an option of the command"),
        ("ssh", {"hosts": [{"host": "a", "folder": "/srv"}]}, r"deploy\.hosts\[0\] has no key"),
        # Wrong types, named with what is expected.
        ("process", {"start": "x", "port": "8080"}, r"deploy\.port must be a port number"),
        ("process", {"start": "x", "port": 0}, r"deploy\.port must be a port number"),
        ("process", {"start": "x", "ready_timeout": "soon"}, r"deploy\.ready_timeout: invalid"),
        ("process", {"start": "x", "stop_timeout": 0}, r"deploy\.stop_timeout: duration must"),
        ("container", {"engine": "nerdctl"}, r"deploy\.engine must be podman or docker"),
        ("container", {"image": "--privileged"}, r"deploy\.image is not an image reference"),
        ("container", {"args": "--privileged"}, r"deploy\.args must be a list of strings"),
        ("container", {"command": [1, 2]}, r"deploy\.command must be a list of strings"),
        ("container", {"tls_verify": "no"}, r"deploy\.tls_verify must be true or false"),
        ("container", {"init": 1}, r"deploy\.init must be true or false"),
        ("ssh", {"hosts": 5}, r"deploy\.hosts must be a list of user@host:port"),
        ("ssh", {"hosts": []}, r"deploy\.hosts must list at least one host"),
        ("ssh", {"hosts": ["a@b@c"]}, r"deploy\.hosts\[0\]\.host: cannot read host 'a@b@c'"),
        ("ssh", {"hosts": ["a", "a:22"]}, r"deploy\.hosts must name each host once; twice: a:22"),
        ("ssh", {"hosts": ["a"], "timeout": "10m"}, r"deploy\.timeout must be a positive number"),
        ("ssh", {"hosts": ["a"], "install": " "}, r"deploy\.install must be a non-empty command"),
        ("ssh", {"hosts": ["a"], "identity": ["k"]}, r"deploy\.identity must be a string"),
        ("command", {"deploy": "x", "timeout": 0}, r"deploy\.timeout must be a positive number"),
        ("command", {"deploy": ["x"]}, r"deploy\.deploy must be a string, got a list"),
        # Required keys, as the targets always said it.
        ("ssh", {}, r"^ssh target: option hosts is required"),
        ("command", {}, r"^command target: option deploy is required"),
    ],
)
def test_mistakes_are_refused_naming_the_key(
    name: str, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(TargetError, match=words):
        target_options(name, options)


def test_a_near_miss_is_suggested_and_an_example_given() -> None:
    with pytest.raises(TargetError) as misspelt:
        target_options("process", {"start": "x", "stop_timout": "5s"})
    assert misspelt.value.hint == "did you mean 'stop_timeout'?"
    with pytest.raises(TargetError) as missing:
        target_options("ssh", {})
    assert missing.value.hint == "deploy: {target: ssh, hosts: [deploy@10.0.0.5]}"


def test_every_mistake_is_listed_at_once() -> None:
    with pytest.raises(TargetError) as failure:
        target_options("container", {"engine": "lxc", "port": -1, "colour": "red"})
    message = failure.value.message
    for key in ("deploy.engine", "deploy.port", "deploy.colour"):
        assert key in message


def test_the_common_keys_are_left_to_the_pipeline() -> None:
    assert {"target", "start", "strategy", "url"} == DEPLOY_KEYS
    for model in BUILT_IN.values():
        assert not DEPLOY_KEYS & set(model.model_fields)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_option_is_described_for_the_reference_and_the_schema(name: str) -> None:
    model = BUILT_IN[name]
    assert issubclass(model, Options)
    schema = model.model_json_schema()
    assert schema["additionalProperties"] is False
    for key, prop in schema["properties"].items():
        assert len(prop.get("description", "")) > 20, f"{name}: {key} has no description"
    assert (model.__doc__ or "").strip()


def test_the_target_reads_its_options_on_first_use_and_again_when_they_change(
    tmp_path: Path,
) -> None:
    ctx = TargetContext("web", "prod", "production", {"start": "x"}, {}, tmp_path, print)
    target = ProcessTarget(ctx)
    assert isinstance(target.options, ProcessOptions)
    assert (target.options.port, target.strategy) == (None, "recreate")
    target.ctx = replace(ctx, options={"start": "x", "strategy": "blue-green", "port": 8123})
    assert (target.options.port, target.strategy) == (8123, "blue-green")
    target.ctx = replace(ctx, options={"start": "x", "port": "8123"})
    with pytest.raises(TargetError, match=r"deploy\.port must be a port number"):
        _ = target.options
    # What the environment serves can still be read: `endpoint` never raises.
    assert target.endpoint(Instance(1)) is None


# --- the registry -------------------------------------------------------------------------------


def test_the_registry_lists_the_built_in_targets_from_their_modules() -> None:
    targets = registry().of(Kind.TARGET)
    assert set(BUILT_IN) <= set(targets)
    for name, model in BUILT_IN.items():
        extension = targets[name]
        assert extension.origin == f"conveyor.targets.{name}"
        assert extension.options is model
        assert extension.implementation is target_class(name)
        assert issubclass(extension.implementation, Target)
        assert extension.implementation.name == name
        assert extension.description


def test_an_unknown_target_names_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"unknown deploy target 'nosuch' \(known: .*process"):
        target_class("nosuch")
    with pytest.raises(TargetError, match=r"unknown deploy target 'nosuch'"):
        target_options("nosuch", {})


PLUGIN = """
from pydantic import Field

from conveyor.extensions import Extension, Kind, Options
from conveyor.targets.base import Instance, Target, TargetStatus, read_options


class NoopOptions(Options):
    \"\"\"Deploys nothing.\"\"\"

    colour: str = Field("blue", description="The colour of nothing.")


class NoopTarget(Target):
    name = "noop"

    async def deploy(self, bundle, previous):
        options = read_options(NoopOptions, self.ctx.options, target=self.name)
        return Instance(bundle.release_id, state={"colour": options.colour})

    async def rollback(self, failed, to, kept):
        return Instance(to.release_id)

    async def status(self, instance):
        return TargetStatus(True)

    def endpoint(self, instance):
        return None


EXTENSION = Extension(
    kind=Kind.TARGET, name="noop", options=NoopOptions, implementation=NoopTarget
)
"""

NOT_A_TARGET = """
from conveyor.extensions import Extension, Kind, Options

EXTENSION = Extension(kind=Kind.TARGET, name="hollow", options=Options, implementation=print)
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A real distribution on sys.path whose dist-info declares entry points (importlib.metadata
    reads them), one good, two broken; and a registry loaded with them."""
    modules = {"noop_target": PLUGIN, "hollow_target": NOT_A_TARGET}
    for module, source in modules.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "conveyor_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: conveyor-test-plugins\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[conveyor.targets]\n"
        "noop = noop_target\n"
        "gone = conveyor_test_no_such_module\n"
        "hollow = hollow_target\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield load()
    finally:
        for module in modules:
            sys.modules.pop(module, None)


def test_a_plugin_registered_through_an_entry_point_is_found(plugins: Registry) -> None:
    found = target_class("noop", extensions=plugins)
    assert found.__name__ == "NoopTarget"
    assert issubclass(found, Target)
    extension = plugins.get(Kind.TARGET, "noop")
    assert extension.origin == "entry point 'noop' (noop_target)"
    options = target_options("noop", {"target": "noop", "colour": "red"}, extensions=plugins)
    assert options.model_dump() == {"colour": "red"}
    with pytest.raises(TargetError, match=r"deploy\.color is not an option of the noop target"):
        target_options("noop", {"color": "red"}, extensions=plugins)


def test_a_broken_plugin_is_reported_and_the_others_still_work(plugins: Registry) -> None:
    problems = [p for p in plugins.problems if p.kind is Kind.TARGET]
    assert [p.origin.split(" (")[0] for p in problems] == ["entry point 'gone'"]
    assert "conveyor_test_no_such_module" in problems[0].message
    for name in (*BUILT_IN, "noop"):
        assert issubclass(target_class(name, extensions=plugins), Target)
    with pytest.raises(TargetError) as unknown:
        target_class("gone", extensions=plugins)
    assert "unknown deploy target 'gone'" in unknown.value.message
    assert "entry point 'gone'" in unknown.value.message
    assert "conveyor_test_no_such_module" in unknown.value.message
    assert "EXTENSION" in (unknown.value.hint or "")


def test_an_extension_that_is_not_a_target_is_refused_by_name(plugins: Registry) -> None:
    with pytest.raises(TargetError, match=r"deploy target 'hollow' .* is not a .*Target subclass"):
        target_class("hollow", extensions=plugins)
