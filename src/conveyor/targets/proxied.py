"""What the process and container targets share: releases listen on fresh ports, and the
environment's stable port forwards to the serving one. The port is held by the edge
(conveyor.edge, a process that outlives the server) when the context names one, else by a proxy
inside this process."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from conveyor.targets.base import Instance, Route, Target, TargetContext, TargetError
from conveyor.targets.proxy import LocalRoute

OptionsT = TypeVar("OptionsT")


class ProxiedTarget(Target, Generic[OptionsT]):
    """A target whose environment URL is ``http://127.0.0.1:<stable port>``. Subclasses parse
    their `deploy:` options, and name the instance-state key that labels an upstream in the
    log and what stopping it means."""

    upstream_label: ClassVar[str] = "version"
    upstream_noun: ClassVar[str] = "release"

    def __init__(self, ctx: TargetContext) -> None:
        super().__init__(ctx)
        self._proxy: Route | None = None
        self._options: tuple[dict[str, Any], OptionsT] | None = None

    @abc.abstractmethod
    def parse_options(self, options: Mapping[str, Any]) -> OptionsT:
        """The target's options from `deploy:`; TargetError names what is wrong."""

    @property
    def options(self) -> OptionsT:
        # Parsed on first use, so that `status` and `endpoint` still work for an environment
        # whose conveyor.yml has since become invalid; parsed again when the controller hands
        # this target another deployment's context, since every release brings its own
        # `deploy:` options (a rollback restores the old release's options too).
        if self._options is None or self._options[0] != self.ctx.options:
            self._options = (dict(self.ctx.options), self.parse_options(self.ctx.options))
        return self._options[1]

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
