"""The one small interface every deploy target implements.

A target knows how to put a release somewhere (`deploy`), how to put an earlier one back
(`rollback`), whether what it runs is alive (`status`) and where checks can reach it
(`endpoint`). Everything else (which release, when, checks, approvals, recording) is the
delivery controller's job, so a target stays a thin adapter over one technology.

Targets keep what they need to find their work again (a pid, a port, a container id, the hosts'
release folders) in `Instance.state`, a JSON-serialisable dict the controller stores with the
deployment. That is what lets a restarted server re-adopt what is running.

Every target is an extension (conveyor.extensions): its module declares
``EXTENSION = Extension(kind=Kind.TARGET, name=..., options=..., implementation=...)`` with a
pydantic model of the `deploy:` keys it accepts besides the ones every target shares
(`DEPLOY_KEYS`), so `conveyor.yml` is checked when it loads and the JSON Schema and the
reference describe them. The built-ins are the modules of this package; a third-party target
is a distribution with an entry point in the group ``conveyor.targets`` naming a module that
declares ``EXTENSION`` (or naming the `Extension` object itself), e.g. in its pyproject.toml::

    [project.entry-points."conveyor.targets"]
    nomad = "conveyor_nomad.target"

The extension's name is the `deploy.target` value in `conveyor.yml`. A target reads its
options with `read_options` (model-checked, TargetError naming the key otherwise) and the
common keys from ``ctx.options``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from conveyor.errors import ConveyorError
from conveyor.extensions import Extension, Kind
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.spec.blocks import DEPLOY_KEYS
from conveyor.spec.problems import describe, explain, format_path, suggest

__all__ = [
    "DEPLOY_KEYS",
    "Edge",
    "Instance",
    "ReleaseBundle",
    "Route",
    "Target",
    "TargetContext",
    "TargetError",
    "TargetStatus",
    "common_url",
    "read_options",
    "target",
]

#: The `deploy:` keys of every target, modelled by the pipeline's `Deploy` and read by targets
#: from ``ctx.options``; a target's options model describes the other keys.

ModelT = TypeVar("ModelT", bound=BaseModel)


class TargetError(ConveyorError):
    """A deployment step failed in a way the user must read: the message says what and where
    ("start command exited with status 1 within 0.2 s", "host 10.0.0.5: connection refused").

    ``previous_serving`` is set by a `deploy` that failed while the release that served before
    still serves (nothing was replaced yet, or the target put it back itself): there is then
    nothing to roll back, even for a target that replaces releases in place.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, previous_serving: bool = False
    ) -> None:
        super().__init__(message, hint=hint)
        self.previous_serving = previous_serving


@dataclass(frozen=True)
class ReleaseBundle:
    """What is deployed: one release, ready on this machine.

    ``root`` is a folder holding the release's commit tree with the release's artifacts placed at
    their paths (e.g. ``dist/app.whl``); targets that ship files upload from here. ``images`` are
    container image references pinned by digest (``host/name@sha256:...``).
    """

    release_id: int
    service: str
    sha: str
    root: Path
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    images: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        """A short, unique, human name for the release: ``r<id>-<sha7>``."""
        return f"r{self.release_id}-{self.sha[:7]}"

    def variables(self) -> dict[str, str]:
        """What every command of a deployment is told of the release (checks, verification,
        the user's own deploy and rollback commands, on this machine or over SSH)."""
        return {
            "CONVEYOR_RELEASE": self.version,
            "CONVEYOR_RELEASE_ID": str(self.release_id),
            "CONVEYOR_SHA": self.sha,
        }


class Route(Protocol):
    """An environment's stable port, forwarding each new connection to one upstream port."""

    @property
    def port(self) -> int: ...

    @property
    def upstream(self) -> int | None: ...

    async def start(self) -> None:
        """Listen (a no-op if already listening); TargetError if the port is taken."""

    async def switch(self, upstream: int, drain_timeout: float) -> int:
        """Send new connections to ``upstream``, wait (bounded) for those to the previous one
        to end; returns how many are still open."""

    async def close(self) -> None:
        """Release what this process holds for the route."""


class Edge(Protocol):
    """Who holds stable ports: the `conveyor edge` process (conveyor.edge), which outlives
    the server. Without one, a target holds its port in the server process itself."""

    def route(self, name: str, port: int) -> Route: ...


@dataclass(frozen=True)
class TargetContext:
    """Where and how: the environment a target instance serves.

    ``options`` are the `deploy:` keys of `conveyor.yml`: the common ones (`DEPLOY_KEYS`:
    ``start``, ``strategy``, ``url``...) and the target's own (``hosts``, ``image``...), which
    `read_options` turns into the target's options model. ``env`` holds the environment's
    variables, secrets and ``CONVEYOR_*`` (service, environment, release, sha), and nothing of
    the server's own environment; pass it to every process the target starts. ``state_dir`` is
    a folder owned by this service+environment that survives restarts. ``log`` writes one line
    to the deployment's log. Commands from the pipeline file run in ``sandbox``
    (conveyor.sandbox; None: configured from the server's environment). ``edge`` holds the
    stable ports of the targets that have one (None: the target's own in-process proxy).
    """

    service: str
    environment: str
    tier: str
    options: Mapping[str, Any]
    env: Mapping[str, str]
    state_dir: Path
    log: Callable[[str], None]
    keep: int = 3
    sandbox: Sandbox | None = None
    edge: Edge | None = None

    def confinement(self) -> Sandbox:
        """The sandbox for the user's commands (SandboxUnavailable when there can be none)."""
        return self.sandbox if self.sandbox is not None else default_sandbox()


@dataclass
class Instance:
    """One release as deployed by a target. ``url`` is where checks and verification reach
    this release (for blue-green: the new release directly, before traffic is switched)."""

    release_id: int
    url: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetStatus:
    """Whether an instance is alive, with a short human detail ("pid 4242 on :8123")."""

    running: bool
    detail: str = ""


class Target(abc.ABC):
    """Base of every deploy target. One object serves one environment of one service and may be
    reused for many deployments; it must not assume it is the process that deployed an
    instance (the server may have restarted since)."""

    name: ClassVar[str]

    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    async def deploy(self, bundle: ReleaseBundle, previous: Instance | None) -> Instance:
        """Put ``bundle`` in place and start it. Blue-green targets start it beside
        ``previous`` (which keeps serving until `switch`); other targets replace ``previous``.
        Raise TargetError with a clear message on failure, leaving ``previous`` serving
        whenever the strategy allows."""

    @property
    def in_place(self) -> bool:
        """Whether a new release serves as soon as `deploy` returns (so a failed check must
        be undone by a rollback), rather than beside the old one until `switch`."""
        return bool(self.ctx.options.get("strategy", "recreate") != "blue-green")

    async def switch(self, new: Instance, previous: Instance | None) -> None:  # noqa: B027
        """Make ``new`` the serving release, then drain and stop ``previous``. Called once the
        health checks passed. Targets that replace in place need nothing here."""

    async def discard(self, instance: Instance) -> None:  # noqa: B027
        """Stop a release that failed before `switch` (its health checks failed)."""

    @abc.abstractmethod
    async def rollback(
        self, failed: Instance | None, to: ReleaseBundle, kept: Instance | None
    ) -> Instance:
        """Put release ``to`` back in service in place of ``failed``; ``kept`` is its earlier
        instance state, if any (e.g. a release folder still on the hosts). Returns the serving
        instance. Must leave exactly one release serving."""

    @abc.abstractmethod
    async def status(self, instance: Instance) -> TargetStatus:
        """Whether ``instance`` is running."""

    @abc.abstractmethod
    def endpoint(self, instance: Instance) -> str | None:
        """The environment's stable URL (what users reach), or None if the target has none."""

    async def adopt(self, instance: Instance) -> bool:
        """After a server restart: take ``instance`` back under management. Return False if it
        is gone (the controller then redeploys it)."""
        return (await self.status(instance)).running

    async def close(self) -> None:  # noqa: B027
        """Release what the target holds in this process (listeners, connections)."""


def target(
    name: str, options: type[BaseModel], implementation: type[Target], summary: str, *, order: int
) -> Extension:
    """The registry entry of a target: ``implementation`` is its `Target` subclass, ``options``
    the model of its own `deploy:` keys."""
    return Extension(Kind.TARGET, name, options, implementation, summary, order=order)


def read_options(model: type[ModelT], options: Mapping[str, Any], *, target: str) -> ModelT:
    """The target-specific keys of `deploy:` (every key but `DEPLOY_KEYS`) as ``model``; a
    TargetError names each key that is wrong and what it expects."""
    own = {key: value for key, value in options.items() if key not in DEPLOY_KEYS}
    try:
        return model.model_validate(own)
    except ValidationError as exc:
        problems = [_problem(model, error, target) for error in exc.errors()]
        hints = [hint for _, hint in problems if hint]
        raise TargetError(
            "; ".join(message for message, _ in problems), hint=hints[0] if hints else None
        ) from None


def common_url(options: Mapping[str, Any]) -> str | None:
    """`deploy.url` (an http(s) URL, checked with the pipeline file), or None."""
    url = options.get("url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.strip():
        raise TargetError(f"deploy.url must be an http(s) URL, got {describe(url)}")
    return url


# Messages of the option types that read as the rest of a sentence after the key.
_PREDICATES = ("must ", "is ", "has ", "needs ")


def _problem(model: type[BaseModel], error: ErrorDetails, target: str) -> tuple[str, str | None]:
    """One validation error as the user reads it: the key (``deploy.hosts[0]``), then what is
    wrong with it; custom errors carry their text in ``detail`` (conveyor.spec.fields)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    path = format_path(("deploy", *loc))
    if kind == "extra_forbidden" and len(loc) == 1:
        keys = [*model.model_fields, *sorted(DEPLOY_KEYS)]
        return (
            f"{path} is not an option of the {target} target",
            suggest(str(loc[0]), keys, f"the {target} target's keys"),
        )
    if kind == "extra_forbidden":
        return f"{format_path(('deploy', *loc[:-1]))} has no key {describe(str(loc[-1]))}", None
    if kind == "missing":
        return f"{target} target: option {format_path(loc)} is required", _example(
            model, loc, target
        )
    message, hint = explain(error, "must be")
    joined = f"{path} {message}" if message.startswith(_PREDICATES) else f"{path}: {message}"
    return joined, hint


def _example(model: type[BaseModel], loc: tuple[int | str, ...], target: str) -> str | None:
    """``deploy: {target: ssh, hosts: [deploy@10.0.0.5]}`` from the field's first example."""
    field = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is None or not field.examples:
        return None
    return f"deploy: {{target: {target}, {loc[0]}: {_flow(field.examples[0])}}}"


def _flow(value: object) -> str:
    """A value as YAML flow style, as people write it in conveyor.yml."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)
