"""What the process and container targets share: releases listen on fresh ports, and the
environment's stable port forwards to the serving one. The port is held by the edge
(conveyor.edge, a process that outlives the server) when the context names one, else by a proxy
inside this process."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from conveyor.extensions import Options
from conveyor.spec.fields import Duration
from conveyor.targets.base import Instance, Route, Target, TargetContext, TargetError
from conveyor.targets.fields import DurationOrZero, Port
from conveyor.targets.proxy import LocalRoute

STRATEGIES = ("recreate", "blue-green")

#: How long a probe of a release's port waits for the connection.
_PROBE_TIMEOUT = 1.0


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a new release."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), _PROBE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ProxiedOptions(Options):
    """The options of every target behind the stable port."""

    port: Port = Field(
        None,
        description="The environment's stable port on 127.0.0.1, where users and checks reach "
        "the serving release. Default: a free port picked on the first deploy and kept.",
        examples=[8080],
    )
    ready_timeout: Duration = Field(
        30.0,
        description="How long a new release may take to accept connections on $PORT before "
        "the deployment fails.",
    )
    drain_timeout: DurationOrZero = Field(
        10.0,
        description="Blue-green: after traffic moves to the new release, how long connections "
        "still open to the old one may finish before it is stopped (0: stop it at once).",
    )


OptionsT = TypeVar("OptionsT", bound=ProxiedOptions)


def check_strategy(target: str, options: Mapping[str, Any]) -> str:
    """`deploy.strategy` if this target supports it (recreate or blue-green)."""
    strategy = options.get("strategy") or "recreate"
    if strategy not in STRATEGIES:
        raise TargetError(
            f"the {target} target does not support strategy {strategy!r}",
            hint="use `strategy: recreate` or `strategy: blue-green`",
        )
    return str(strategy)


class ProxiedTarget(Target, Generic[OptionsT]):
    """A target whose environment URL is ``http://127.0.0.1:<stable port>``. Subclasses read
    their `deploy:` options into their model (a `ProxiedOptions`), and name the instance-state
    key that labels an upstream in the log and what stopping it means."""

    upstream_label: ClassVar[str] = "version"
    upstream_noun: ClassVar[str] = "release"

    def __init__(self, ctx: TargetContext) -> None:
        super().__init__(ctx)
        self._proxy: Route | None = None
        self._parsed: tuple[dict[str, Any], str, OptionsT] | None = None

    @abc.abstractmethod
    def parse_options(self, options: Mapping[str, Any]) -> OptionsT:
        """The target's options model from `deploy:` (`read_options`), after checking any
        other common key it relies on; TargetError names what is wrong."""

    @property
    def options(self) -> OptionsT:
        """The options model of the context's `deploy:` options."""
        return self._settings()[1]

    @property
    def strategy(self) -> str:
        """`deploy.strategy`: recreate or blue-green."""
        return self._settings()[0]

    def _settings(self) -> tuple[str, OptionsT]:
        # Parsed on first use, so that `status` and `endpoint` still work for an environment
        # whose conveyor.yml has since become invalid; parsed again when the controller hands
        # this target another deployment's context, since every release brings its own
        # `deploy:` options (a rollback restores the old release's options too).
        if self._parsed is None or self._parsed[0] != self.ctx.options:
            strategy = check_strategy(self.name, self.ctx.options)
            model = self.parse_options(self.ctx.options)
            self._parsed = (dict(self.ctx.options), strategy, model)
        return self._parsed[1], self._parsed[2]

    def endpoint(self, instance: Instance) -> str | None:
        port = self._proxy.port if self._proxy is not None else self._stable_port()
        return f"http://127.0.0.1:{port}" if port else None

    async def close(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.close()

    @property
    def _port_file(self) -> Path:
        return self.ctx.state_dir / "port"

    def _stable_port(self) -> int:
        """The configured port, else the one picked on the first deploy, else 0 (pick one)."""
        port = self.ctx.options.get("port")
        if port is not None:
            # Validated on deploy; here only read, so that `endpoint` never raises.
            return port if isinstance(port, int) and not isinstance(port, bool) else 0
        try:
            return int(self._port_file.read_text().strip())
        except (OSError, ValueError):
            return 0

    async def _ensure_proxy(self) -> Route:
        if self._proxy is not None:
            return self._proxy
        wanted = self._stable_port()
        edge = self.ctx.edge
        name = f"{self.ctx.service}/{self.ctx.environment}"
        proxy = edge.route(name, wanted) if edge is not None else LocalRoute(wanted)
        await proxy.start()
        if wanted == 0:
            # Let the system pick (no race with other programs), then keep it: the
            # environment's URL must not change when the server restarts.
            try:
                self._port_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._port_file.with_suffix(".tmp")
                tmp.write_text(f"{proxy.port}\n")
                tmp.replace(self._port_file)
            except OSError as exc:
                await proxy.close()
                raise TargetError(f"cannot record the environment's port: {exc}") from exc
        self._proxy = proxy
        where = "the edge" if edge is not None else "proxy"
        self.ctx.log(f"{where} listening on 127.0.0.1:{proxy.port}")
        return proxy

    async def _route(self, instance: Instance, drain_timeout: float) -> None:
        proxy = await self._ensure_proxy()
        port = int(instance.state["port"])
        previous = proxy.upstream
        if previous == port:
            return
        label = instance.state.get(self.upstream_label)
        self.ctx.log(f"proxy :{proxy.port} now forwards to {label} :{port}")
        still_open = await proxy.switch(port, drain_timeout)
        if previous is not None and drain_timeout > 0 and still_open:
            self.ctx.log(
                f"{still_open} connection(s) to :{previous} still open "
                f"after {drain_timeout:g} s; they end when that {self.upstream_noun} stops"
            )
