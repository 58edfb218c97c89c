"""The one small interface every deploy target implements.

A target knows how to put a release somewhere (`deploy`), how to put an earlier one back
(`rollback`), whether what it runs is alive (`status`) and where checks can reach it
(`endpoint`). Everything else (which release, when, checks, approvals, recording) is the
delivery controller's job, so a target stays a thin adapter over one technology.

Targets keep what they need to find their work again (a pid, a port, a container id, the hosts'
release folders) in `Instance.state`, a JSON-serialisable dict the controller stores with the
deployment. That is what lets a restarted server re-adopt what is running.

Third-party targets register a `Target` subclass under the entry-point group
``conveyor.targets``; the entry point's name is the `deploy.target` value in `conveyor.yml`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from conveyor.errors import ConveyorError
from conveyor.sandbox import Sandbox, default_sandbox

__all__ = [
    "Edge",
    "Instance",
    "ReleaseBundle",
    "Route",
    "Target",
    "TargetContext",
    "TargetError",
    "TargetStatus",
]


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

    ``options`` are the `deploy:` keys of `conveyor.yml` (``start``, ``strategy``, and every
    target-specific key such as ``hosts`` or ``image``). ``env`` holds the environment's
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
