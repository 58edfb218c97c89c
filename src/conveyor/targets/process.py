"""The `process` deploy target: the service runs as a plain process on the server's machine.

Each release runs the user's `start` command on a fresh port of its own (``$PORT``); the built-in
proxy (conveyor.targets.proxy) listens on the environment's stable port and forwards to the
release that is serving. Fresh ports are what make blue-green possible: the new release starts
beside the old one, its checks reach it directly, and `switch` moves traffic in one step.

Releases run in a session of their own, so they outlive a restart of the server; `Instance.state`
keeps their pid *and* process start time, so a restarted server can find them again without
mistaking an unrelated process that reused the pid for one of them.

The start command is pipeline code: it runs in the sandbox (conveyor.sandbox) with the release
folder as its home, but not tied to the server's life (design §8). Its pid is then bubblewrap's,
which lives exactly as long as the release inside it. Besides the release folder it may write
one more: the environment's data folder (``$CONVEYOR_DATA_DIR``), which every release of the
environment shares and which outlives deploys and rollbacks, for what must persist (a SQLite
database, uploads). A release folder is replaced on every deploy; the data folder never is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from conveyor.proc import (
    kill_process_group,
    process_alive,
    process_start_time,
    supervised,
    terminate_group,
)
from conveyor.spec.fields import Duration
from conveyor.targets.base import (
    Instance,
    ReleaseBundle,
    TargetError,
    TargetStatus,
    read_options,
    target,
)
from conveyor.targets.proxied import ProxiedOptions, ProxiedTarget, accepts, free_port

__all__ = ["EXTENSION", "ProcessOptions", "ProcessTarget", "data_dir"]

_POLL = 0.02
# After SIGKILL, how long to wait for the kernel to take the process away.
_KILL_WAIT = 5.0
_TAIL_LINES = 5
_TAIL_BYTES = 16 * 1024

# Releases this server process started. Keeping the Popen objects (rather than dropping them)
# lets us reap a release that exits, and keeps subprocess from warning that a child it no longer
# tracks is still running: releases are meant to outlive the object that started them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def data_dir(state_dir: Path) -> Path:
    """The environment's persistent data folder (``$CONVEYOR_DATA_DIR``), made if missing:
    private to the releases (0700), whatever the umask."""
    path = state_dir / "data"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


class ProcessOptions(ProxiedOptions):
    """Runs each release's `start` command as a process on the server's machine, on a fresh
    port behind the environment's stable port. `$CONVEYOR_DATA_DIR` is the environment's data
    folder (mode 0700), shared by its releases and kept across deploys and rollbacks: keep a
    SQLite database or uploads there, not in the release folder, which each deploy replaces."""

    stop_timeout: Duration = Field(
        5.0,
        description="How long a release may take to exit after SIGTERM before it is killed.",
    )


def _start_command(options: Mapping[str, Any]) -> str:
    start = options.get("start")
    if not isinstance(start, str) or not start.strip():
        raise TargetError(
            "the process target needs a `start` command",
            hint="add `start: <command that listens on $PORT>` under `deploy:` in conveyor.yml",
        )
    return start


def _running(state: Mapping[str, Any]) -> bool:
    """Alive and still the same process: a pid alone may since name an unrelated process."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    _reap(pid)
    if not process_alive(pid):
        return False
    started = state.get("start_time")
    return started is None or process_start_time(pid) == started


def _reap(pid: int) -> int | None:
    """Collect the exit status of a release we started, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is None:
        return None
    code = child.poll()
    if code is not None:
        del _CHILDREN[pid]
    return code


def _reap_all() -> None:
    for pid in list(_CHILDREN):
        _reap(pid)


def _group_is_ours(pid: int, started: str | None) -> bool:
    """Whether signalling process group ``pid`` can only reach processes of this release.

    A group id stays reserved while any member lives, even after its leader is gone, so when no
    process carries the pid the group is either ours (stragglers) or empty. A process with that
    pid and another start time means the number was reused: the group is someone else's.
    """
    actual = process_start_time(pid)
    return actual is None or started is None or actual == started


async def _wait_gone(pid: int, started: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not _running({"pid": pid, "start_time": started}):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)


def _log_tail(path: Path, offset: int) -> str:
    """The last lines this run of the release wrote (not earlier runs of the same version)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return " (its log cannot be read)"
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return " (its log is empty)"
    return "".join(f"\n  {line}" for line in lines[-_TAIL_LINES:])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


class ProcessTarget(ProxiedTarget[ProcessOptions]):
    """Runs releases as local processes behind the built-in proxy."""

    name: ClassVar[str] = "process"

    def parse_options(self, options: Mapping[str, Any]) -> ProcessOptions:
        _start_command(options)
        return read_options(ProcessOptions, options, target=self.name)

    # --- the Target interface ------------------------------------------------------------------

    async def deploy(self, bundle: ReleaseBundle, previous: Instance | None) -> Instance:
        opts = self.options
        # The stable port first: if it is taken, fail before anything is started or stopped.
        proxy = await self._ensure_proxy()
        if self.strategy == "recreate":
            if previous is not None:
                await self._stop(previous, opts.stop_timeout)
            instance = await self._launch(bundle)
            await self._route(instance, drain_timeout=0.0)
            return instance
        if previous is not None and proxy.upstream is None and _running(previous.state):
            # A restarted server deploying without adopting first: users keep reaching previous.
            await self._route(previous, drain_timeout=0.0)
        return await self._launch(bundle)

    async def switch(self, new: Instance, previous: Instance | None) -> None:
        await self._ensure_proxy()
        await self._route(new, drain_timeout=self.options.drain_timeout)
        if previous is not None and previous.state.get("pid") != new.state.get("pid"):
            await self._stop(previous, self.options.stop_timeout)

    async def discard(self, instance: Instance) -> None:
        await self._stop(instance, self.options.stop_timeout)

    async def rollback(
        self, failed: Instance | None, to: ReleaseBundle, kept: Instance | None
    ) -> Instance:
        opts = self.options
        await self._ensure_proxy()
        if (
            kept is not None
            and kept.state.get("version") == to.version
            and _running(kept.state)
            and await accepts(int(kept.state["port"]))
        ):
            # Still running (blue-green, failed before or right after the switch): the fastest
            # way back is to route to it again.
            instance = kept
        else:
            if failed is not None and self.strategy == "recreate":
                # Recreate promises never to run two releases at once; keep that promise.
                await self._stop(failed, opts.stop_timeout)
            instance = await self._launch(to)
        # No drain: the failed release's in-flight requests end with its own graceful stop.
        await self._route(instance, drain_timeout=0.0)
        if failed is not None and failed.state.get("pid") != instance.state.get("pid"):
            await self._stop(failed, opts.stop_timeout)
        return instance

    async def status(self, instance: Instance) -> TargetStatus:
        pid, port = instance.state.get("pid"), instance.state.get("port")
        if _running(instance.state):
            return TargetStatus(True, f"pid {pid} on :{port}")
        return TargetStatus(False, f"pid {pid} is not running")

    async def adopt(self, instance: Instance) -> bool:
        if not _running(instance.state):
            return False
        await self._ensure_proxy()
        await self._route(instance, drain_timeout=0.0)
        return True

    # --- releases ------------------------------------------------------------------------------

    async def _launch(self, bundle: ReleaseBundle) -> Instance:
        """Start ``bundle`` on a fresh port and wait until that port accepts connections."""
        opts = self.options
        start = _start_command(self.ctx.options)
        _reap_all()
        root = bundle.root
        if not root.is_dir():
            raise TargetError(f"release folder {root} does not exist")
        sandbox = self.ctx.confinement()
        data = await asyncio.to_thread(data_dir, self.ctx.state_dir)
        await asyncio.to_thread(sandbox.claim, root)
        await asyncio.to_thread(sandbox.claim, data)
        port = free_port()
        version = bundle.version
        log_path = self.ctx.state_dir / "logs" / f"{version}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **self.ctx.env,
            "PORT": str(port),
            "CONVEYOR_RELEASE": version,
            "CONVEYOR_DATA_DIR": str(data),
        }
        argv = ["bash", "-c", start]
        with (
            log_path.open("ab") as log,
            sandbox.launch(
                argv, env=env, root=root, die_with_parent=False, writable=[data]
            ) as launch,
        ):
            log.write(f"[conveyor] starting {version} on port {port}\n".encode())
            log.flush()
            offset = log.tell()
            try:
                # Into its control group before it runs (a release's group outlives the server,
                # as the release does; an empty one is swept later).
                child = launch.popen(**supervised(log))
            except OSError as exc:
                raise TargetError(f"cannot run the start command: {exc.strerror or exc}") from exc
        started_at = time.monotonic()
        _CHILDREN[child.pid] = child
        state: dict[str, Any] = {
            "pid": child.pid,
            "start_time": process_start_time(child.pid),
            "port": port,
            "version": version,
            "root": str(root),
            "log": str(log_path),
        }
        instance = Instance(bundle.release_id, url=f"http://127.0.0.1:{port}", state=state)
        self.ctx.log(f"started {version}: pid {child.pid} on :{port} (log: {log_path})")

        deadline = started_at + opts.ready_timeout
        while True:
            if await accepts(port):
                break
            code = _reap(child.pid)
            if code is not None:
                elapsed = time.monotonic() - started_at
                if _group_is_ours(child.pid, state["start_time"]):
                    kill_process_group(child.pid, signal.SIGKILL)  # anything it left behind
                raise TargetError(
                    f"start command {_describe_exit(code)} after {elapsed:.2f} s; "
                    f"last lines of its log ({log_path}):{_log_tail(log_path, offset)}"
                )
            if time.monotonic() >= deadline:
                await self._stop(instance, opts.stop_timeout)
                raise TargetError(
                    f"{version} did not accept connections on port {port} within "
                    f"{opts.ready_timeout:g} s (the start command must listen on $PORT); "
                    f"last lines of its log ({log_path}):{_log_tail(log_path, offset)}"
                )
            await asyncio.sleep(_POLL)
        self.ctx.log(
            f"{version} accepts connections on :{port} after {time.monotonic() - started_at:.2f} s"
        )
        return instance

    async def _stop(self, instance: Instance, timeout: float) -> None:
        """SIGTERM to the release's process group, SIGKILL once ``timeout`` has passed."""
        pid = instance.state.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return
        started = instance.state.get("start_time")
        version = instance.state.get("version", f"release {instance.release_id}")
        if not _running(instance.state):
            if _group_is_ours(pid, started):
                kill_process_group(pid, signal.SIGKILL)  # stragglers of a leader that died
            return
        terminate_group(pid)
        if not await _wait_gone(pid, started, timeout):
            self.ctx.log(f"{version} (pid {pid}) did not stop within {timeout:g} s: killing it")
            kill_process_group(pid, signal.SIGKILL)
            if not await _wait_gone(pid, started, _KILL_WAIT):
                raise TargetError(f"{version} (pid {pid}) is still running after SIGKILL")
        if _group_is_ours(pid, started):
            kill_process_group(pid, signal.SIGKILL)  # what it started and left behind
        self.ctx.log(f"stopped {version} (pid {pid})")


EXTENSION = target(
    "process",
    ProcessOptions,
    ProcessTarget,
    "Runs the release's `start` command as a process on the server's machine; the "
    "environment's stable port forwards to the serving release (recreate or blue-green).",
    order=10,
)
