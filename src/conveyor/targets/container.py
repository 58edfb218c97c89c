"""The `container` deploy target: each release runs as a container on this machine.

The image is pulled before anything is stopped, so a reference that does not exist (or a
registry that is down) fails the deployment with the previous release untouched, whatever the
strategy. Containers share the host's network and listen on 127.0.0.1:$PORT, a fresh port per
release, and the built-in proxy (conveyor.targets.proxy) keeps the environment's stable port in
front of whichever release serves: that is what allows blue-green with plain containers, no
bridge network, no port mapping and no daemon-side load balancer.

Containers are started detached (`run -d`), so they outlive a restart of the server;
`Instance.state` keeps the container id, which `status` and `adopt` check (a name alone could
since belong to another container).

Variables reach the container as `-e NAME` with the value in the engine client's environment,
so secrets never show on a command line (`ps`). Names the engine client reads itself (PATH,
HOME, CONTAINERS_CONF, DOCKER_HOST, ...) describe this machine or configure the engine: they
configure the client and are not passed into the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from conveyor.runner.container import client_env
from conveyor.spec.fields import Duration, user_error
from conveyor.spec.problems import describe
from conveyor.targets.base import (
    Instance,
    ReleaseBundle,
    TargetError,
    TargetStatus,
    read_options,
    target,
)
from conveyor.targets.fields import DurationOrZero, Flag, Strings
from conveyor.targets.proxied import ProxiedOptions, ProxiedTarget, accepts, free_port

__all__ = ["EXTENSION", "ContainerOptions", "ContainerTarget"]

_ENGINES = ("podman", "docker")
_POLL = 0.05
_ENGINE_TIMEOUT = 60.0
_TAIL_LINES = 5
# Where podman lives on Debian; a non-root PATH may lack the sbin folders.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# A reference like registry:5000/team/app:1.2@sha256:..., and in particular not an option.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


def _engine(value: object) -> object:
    if value is None or value == "":
        return "podman"
    if value not in _ENGINES:
        raise user_error(
            "engine",
            f"must be podman or docker, got {describe(value)}",
            "the container target runs containers with `podman` (default) or `docker`",
        )
    return value


def _image(value: object) -> object:
    if value is not None and (not isinstance(value, str) or not _IMAGE.fullmatch(value)):
        raise user_error(
            "image",
            f"is not an image reference: {value!r}",
            "give a reference like registry.example.com/team/app@sha256:...",
        )
    return value


class ContainerOptions(ProxiedOptions):
    """Runs each release's image as a container on the server's machine, on a fresh port
    behind the environment's stable port."""

    image: Annotated[
        Annotated[str, Field(pattern=f"^{_IMAGE.pattern}$")] | None, BeforeValidator(_image)
    ] = Field(
        None,
        description="The image to run. Default: the release's first published image, pinned "
        "by digest. A tag given here is pulled and pinned when the release deploys.",
        examples=["registry.example.com/team/app@sha256:..."],
    )
    engine: Annotated[Literal["podman", "docker"], BeforeValidator(_engine)] = Field(
        "podman", description="The container engine that runs the releases."
    )
    tls_verify: Flag = Field(
        True,
        description="Verify the registry's TLS certificate when pulling (false only for a "
        "registry of your own on plain HTTP or with a self-signed certificate).",
    )
    stop_timeout: DurationOrZero = Field(
        10.0,
        description="How long a container may take to exit after SIGTERM before it is killed "
        "(0: kill it at once).",
    )
    pull_timeout: Duration = Field(
        300.0, description="How long pulling the image may take before the deployment fails."
    )
    init: Flag = Field(
        True,
        description="Run an init process as the container's PID 1 (`--init`), which forwards "
        "signals and reaps zombies. podman needs its `catatonit` package for it "
        "(`apt-get install catatonit`); `init: false` runs without.",
    )
    args: Strings = Field(
        (),
        description="More arguments for the engine's `run`, before the image "
        "(e.g. resource limits).",
        examples=[["--memory", "256m"]],
    )
    command: Strings = Field(
        (),
        description="The command and arguments to run in the container instead of the "
        "image's default.",
        examples=[["serve", "--workers", "2"]],
    )


def _safe(text: str) -> str:
    return _NAME_UNSAFE.sub("-", text).strip("-._")[:60].rstrip("-._") or "x"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _repository(image: str) -> str:
    """``host:5000/team/app:1.2@sha256:...`` → ``host:5000/team/app``."""
    name = image.partition("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass(frozen=True)
class _Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class _State:
    """What `inspect` says about a container."""

    id: str
    running: bool
    status: str
    exit_code: int


class ContainerTarget(ProxiedTarget[ContainerOptions]):
    """Runs releases as containers (podman or docker) behind the built-in proxy."""

    upstream_label = "container"
    upstream_noun = "container"

    name: ClassVar[str] = "container"

    def parse_options(self, options: Mapping[str, Any]) -> ContainerOptions:
        return read_options(ContainerOptions, options, target=self.name)

    # --- the Target interface ------------------------------------------------------------------

    async def deploy(self, bundle: ReleaseBundle, previous: Instance | None) -> Instance:
        # The options, the stable port and the image first: if any fails, nothing was stopped.
        try:
            strategy = self.strategy
            image = self._image(bundle)
            proxy = await self._ensure_proxy()
            pinned = await self._pull(image)
        except TargetError as exc:
            exc.previous_serving = True
            raise
        if strategy == "recreate":
            if previous is not None:
                await self._stop(previous)
            instance = await self._launch(bundle, image, pinned, keep=())
            await self._route(instance, drain_timeout=0.0)
            return instance
        keep: tuple[Instance, ...] = ()
        if previous is not None:
            state = await self._inspect_instance(previous)
            if state is not None and state.running:
                keep = (previous,)
                if proxy.upstream is None:
                    await self._route(previous, drain_timeout=0.0)  # e.g. after a restart
        return await self._launch(bundle, image, pinned, keep=keep)

    async def switch(self, new: Instance, previous: Instance | None) -> None:
        await self._ensure_proxy()
        await self._route(new, drain_timeout=self.options.drain_timeout)
        if previous is not None and not _same_container(previous, new):
            await self._stop(previous)

    async def discard(self, instance: Instance) -> None:
        await self._stop(instance)

    async def rollback(
        self, failed: Instance | None, to: ReleaseBundle, kept: Instance | None
    ) -> Instance:
        strategy = self.strategy
        await self._ensure_proxy()
        if kept is not None and kept.release_id == to.release_id:
            state = await self._inspect_instance(kept)
            if state is not None and state.running and await accepts(int(kept.state["port"])):
                # Still running (blue-green, failed before or right after the switch): the
                # fastest way back is to route to it again.
                await self._route(kept, drain_timeout=0.0)
                if failed is not None and not _same_container(failed, kept):
                    await self._stop(failed)
                return kept
        image = self._image(to, kept)
        pinned = await self._pull(image)
        if failed is not None and strategy == "recreate":
            # Recreate promises never to run two releases at once; keep that promise.
            await self._stop(failed)
        keep = (failed,) if failed is not None and strategy != "recreate" else ()
        instance = await self._launch(to, image, pinned, keep=keep)
        # No drain: the failed release's in-flight requests end with its own graceful stop.
        await self._route(instance, drain_timeout=0.0)
        if failed is not None and not _same_container(failed, instance):
            await self._stop(failed)
        return instance

    async def status(self, instance: Instance) -> TargetStatus:
        name = instance.state.get("container", "?")
        port = instance.state.get("port")
        try:
            state = await self._inspect_instance(instance)
        except TargetError as exc:
            return TargetStatus(False, exc.message)
        if state is None:
            return TargetStatus(False, f"container {name} does not exist")
        if state.running:
            return TargetStatus(True, f"container {name} ({state.id[:12]}) on :{port}")
        return TargetStatus(False, f"container {name} is {state.status} (exit {state.exit_code})")

    async def adopt(self, instance: Instance) -> bool:
        state = await self._inspect_instance(instance)
        if state is None or not state.running:
            return False
        await self._ensure_proxy()
        await self._route(instance, drain_timeout=0.0)
        return True

    # --- the engine ----------------------------------------------------------------------------

    def _client_env(self) -> dict[str, str]:
        """The engine's environment: this process's, then the environment's (which may set
        CONTAINERS_CONF and the like), then the values that `-e NAME` forwards."""
        env = {**os.environ, **self.ctx.env}
        env["PATH"] = os.pathsep.join([env.get("PATH", os.defpath), *_EXTRA_PATH])
        return env

    def _engine(self) -> str:
        engine = self.options.engine
        found = shutil.which(engine, path=self._client_env()["PATH"])
        if found is None:
            raise TargetError(
                f"the container engine {engine!r} is not installed on this machine",
                hint="install podman (apt-get install podman), or set deploy.engine",
            )
        return found

    @property
    def _podman(self) -> bool:
        return self.options.engine == "podman"

    async def _run(
        self, *args: str, timeout: float = _ENGINE_TIMEOUT, env: Mapping[str, str] | None = None
    ) -> _Result:
        engine = self._engine()
        proc = await asyncio.create_subprocess_exec(
            engine,
            *args,
            env=dict(env) if env is not None else self._client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise TargetError(
                    f"`{self.options.engine} {args[0]}` did not finish within {timeout:g} s"
                ) from None
            raise
        assert proc.returncode is not None
        return _Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def _inspect(self, ref: str) -> _State | None:
        """The container ``ref`` (id or name), or None if no such container exists."""
        result = await self._run("container", "inspect", ref)
        if result.code != 0:
            if re.search(r"no such (container|object)", result.err, re.IGNORECASE):
                return None
            raise TargetError(
                f"cannot inspect container {ref}: {_last_line(result.err or result.out)}"
            )
        try:
            data = json.loads(result.out)[0]
            state = data["State"]
            return _State(
                id=str(data["Id"]),
                running=bool(state["Running"]),
                status=str(state.get("Status", "unknown")),
                exit_code=int(state.get("ExitCode", 0)),
            )
        except (ValueError, LookupError, TypeError):
            raise TargetError(
                f"`{self.options.engine} inspect {ref}` gave no usable answer"
            ) from None

    async def _inspect_instance(self, instance: Instance) -> _State | None:
        """The instance's own container: by id, so a new container that took the same name
        is never mistaken for it."""
        ref = instance.state.get("id") or instance.state.get("container")
        if not isinstance(ref, str) or not ref:
            return None
        return await self._inspect(ref)

    async def _pull(self, image: str) -> str | None:
        """Pull ``image``; return it pinned by digest (``repo@sha256:...``) when the engine
        knows the digest, so that a rollback runs exactly these bytes again."""
        opts = self.options
        argv = ["pull", "--quiet"]
        if not opts.tls_verify:
            # Only ever turned off: with the default, registries.conf still decides (it may
            # already list the registry as insecure).
            if self._podman:
                argv.append("--tls-verify=false")
            else:
                self.ctx.log("docker decides TLS itself (daemon.json insecure-registries)")
        self.ctx.log(f"pulling {image}")
        started = time.monotonic()
        result = await self._run(*argv, image, timeout=opts.pull_timeout)
        if result.code != 0:
            raise TargetError(
                f"cannot pull {image}: {_last_line(result.err or result.out)}",
                hint="check the image reference and that the registry is reachable",
            )
        if "@" in image:
            pinned: str | None = image
        else:
            pinned = await self._repo_digest(image)
        self.ctx.log(f"pulled {pinned or image} in {time.monotonic() - started:.2f} s")
        return pinned

    async def _repo_digest(self, image: str) -> str | None:
        result = await self._run("image", "inspect", image)
        with contextlib.suppress(ValueError, LookupError, TypeError):
            repo = _repository(image)
            for digest in json.loads(result.out)[0].get("RepoDigests") or []:
                if isinstance(digest, str) and digest.partition("@")[0] == repo:
                    return digest
        return None

    async def _logs(self, ref: str) -> str:
        result = await self._run("logs", "--tail", str(_TAIL_LINES), ref)
        lines = [line for line in (result.out + result.err).splitlines() if line.strip()]
        if not lines:
            return " (its log is empty)"
        return "".join(f"\n  {line}" for line in lines[-_TAIL_LINES:])

    async def _remove(self, ref: str) -> None:
        args = ["rm", "--force"]
        if self._podman:
            args += ["--time", "0"]
        result = await self._run(*args, ref)
        if result.code != 0 and await self._inspect(ref) is not None:
            raise TargetError(f"cannot remove container {ref}: {_last_line(result.err)}")

    async def _stop(self, instance: Instance) -> None:
        """Stop (SIGTERM, SIGKILL after stop_timeout) and remove the instance's container."""
        name = instance.state.get("container", f"release {instance.release_id}")
        state = await self._inspect_instance(instance)
        if state is None:
            return
        timeout = self.options.stop_timeout
        if state.running:
            result = await self._run(
                "stop", "-t", str(round(timeout)), state.id, timeout=timeout + _ENGINE_TIMEOUT
            )
            if result.code != 0:
                self.ctx.log(f"stopping {name} failed ({_last_line(result.err)}): removing it")
        await self._remove(state.id)
        self.ctx.log(f"stopped and removed {name}")

    # --- releases ------------------------------------------------------------------------------

    def _image(self, bundle: ReleaseBundle, kept: Instance | None = None) -> str:
        """The image of ``bundle``: as pinned when it last ran (a rollback must run the same
        bytes, even if a configured tag moved since), else `deploy.image`, else the bundle's."""
        if kept is not None and kept.release_id == bundle.release_id:
            recorded = kept.state.get("pinned") or kept.state.get("image")
            if isinstance(recorded, str) and _IMAGE.fullmatch(recorded):
                return recorded
        image = self.options.image or (bundle.images[0] if bundle.images else None)
        if image is None:
            raise TargetError(
                f"release {bundle.version} has no container image to deploy",
                hint="publish an image for the release, or set `image:` under `deploy:`",
            )
        if not _IMAGE.fullmatch(image):
            raise TargetError(f"invalid image reference {image!r}")
        return image

    def _variables(self, bundle: ReleaseBundle, port: int) -> dict[str, str]:
        variables = {
            **self.ctx.env,
            "PORT": str(port),
            "CONVEYOR_RELEASE": bundle.version,
        }
        # Names the engine client reads itself are this machine's, not the container's.
        forwarded = client_env({}, variables)
        return {k: v for k, v in variables.items() if k in forwarded}

    async def _container_name(self, bundle: ReleaseBundle, keep: Sequence[Instance]) -> str:
        """``conveyor-<service>-<environment>-<version>``; a leftover container of that name
        (a crashed deploy) is removed, one still serving gets a suffix instead."""
        base = "-".join(
            ["conveyor", _safe(self.ctx.service), _safe(self.ctx.environment), bundle.version]
        )
        existing = await self._inspect(base)
        if existing is None:
            return base
        kept_ids = {k.state.get("id") for k in keep}
        if existing.id in kept_ids:
            return f"{base}-{secrets.token_hex(3)}"
        self.ctx.log(f"removing the leftover container {base} ({existing.status})")
        await self._remove(existing.id)
        return base

    async def _launch(
        self,
        bundle: ReleaseBundle,
        image: str,
        pinned: str | None,
        *,
        keep: Sequence[Instance],
    ) -> Instance:
        """Start ``image`` on a fresh port and wait until that port accepts connections."""
        opts = self.options
        name = await self._container_name(bundle, keep)
        port = free_port()
        variables = self._variables(bundle, port)
        argv = ["run", "--detach", "--name", name, "--network", "host", "--pull", "never"]
        if opts.init:
            argv.append("--init")
        for key, value in (
            ("service", self.ctx.service),
            ("environment", self.ctx.environment),
            ("release", bundle.version),
        ):
            argv += ["--label", f"conveyor.{key}={value}"]
        for key in sorted(variables):
            argv += ["-e", key]
        argv += [*opts.args, image, *opts.command]
        started = time.monotonic()
        result = await self._run(*argv, env={**self._client_env(), **variables})
        if result.code != 0:
            # A container may exist even though `run` failed (e.g. the runtime refused it).
            with contextlib.suppress(TargetError):
                await self._remove(name)
            raise TargetError(
                f"cannot start {image} as {name}: {_last_line(result.err or result.out)}"
            )
        container_id = _last_line(result.out)
        state: dict[str, Any] = {
            "container": name,
            "id": container_id,
            "port": port,
            "image": image,
            "pinned": pinned,
            "version": bundle.version,
            "engine": opts.engine,
        }
        instance = Instance(bundle.release_id, url=f"http://127.0.0.1:{port}", state=state)
        self.ctx.log(f"started {bundle.version}: container {name} ({container_id[:12]}) on :{port}")
        await self._wait_ready(instance, started)
        return instance

    async def _wait_ready(self, instance: Instance, started: float) -> None:
        opts = self.options
        name, port = instance.state["container"], int(instance.state["port"])
        deadline = started + opts.ready_timeout
        while True:
            if await accepts(port):
                break
            state = await self._inspect_instance(instance)
            if state is None or not state.running:
                elapsed = time.monotonic() - started
                if state is None:
                    raise TargetError(f"container {name} disappeared after {elapsed:.2f} s")
                logs = await self._logs(state.id)
                await self._remove(state.id)
                raise TargetError(
                    f"container {name} exited with status {state.exit_code} after "
                    f"{elapsed:.2f} s; last lines of its log:{logs}"
                )
            if time.monotonic() >= deadline:
                logs = await self._logs(name)
                await self._stop(instance)
                raise TargetError(
                    f"container {name} did not accept connections on port {port} within "
                    f"{opts.ready_timeout:g} s (it must listen on 127.0.0.1:$PORT); "
                    f"last lines of its log:{logs}"
                )
            await asyncio.sleep(_POLL)
        self.ctx.log(
            f"{name} accepts connections on :{port} after {time.monotonic() - started:.2f} s"
        )


def _same_container(a: Instance, b: Instance) -> bool:
    return bool(a.state.get("id")) and a.state.get("id") == b.state.get("id")


EXTENSION = target(
    "container",
    ContainerOptions,
    ContainerTarget,
    "Runs the release's image as a container (podman or docker) on the server's "
    "machine; the environment's stable port forwards to the serving release (recreate or "
    "blue-green).",
    order=20,
)
