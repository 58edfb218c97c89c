"""The ``ssh`` target: ship a release to plain hosts over SSH, one host at a time.

Each host keeps releases side by side (``<path>/releases/<version>``) and serves the one the
``<path>/current`` symlink points at. Switching is a rename of a fresh symlink over the old one,
so a host is never without a ``current``; rolling back is the same switch to an older folder.

The deploy is rolling: host k is only touched once hosts 1..k-1 have switched and restarted.
When host k fails, every host already switched is put back on what it served before, so an
environment is never left half on the new release. Host keys are always verified against a
known_hosts file: a deploy must not hand a release (and the environment's variables) to
whoever answers on an address.

The user's own ``install``, ``restart`` and ``status`` commands come from their repository and
run as written, like job steps; every value Conveyor interpolates into a remote command
(paths, versions, variables) is quoted, because it may come from a branch name, a SHA or an
option nobody reviewed as shell code.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import posixpath
import re
import shlex
import tarfile
import tempfile
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from cryptography.utils import CryptographyDeprecationWarning
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from conveyor.extensions import Options
from conveyor.proc import sanitize_line
from conveyor.spec.fields import user_error
from conveyor.spec.problems import describe
from conveyor.targets.base import (
    Instance,
    ReleaseBundle,
    Target,
    TargetError,
    TargetStatus,
    common_url,
    read_options,
    target,
)
from conveyor.targets.fields import Command, Seconds, Text

# asyncssh names cryptography's DSA classes at import, which cryptography 51 deprecated
# (pyca/cryptography#15597; asyncssh tracks it in ronf/asyncssh#826). Not ours, and Conveyor
# never uses DSA keys: kept off users' terminals for that module and message only.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module=r"asyncssh\.crypto\.(misc|dsa)$",
    )
    import asyncssh
    from asyncssh.constants import EXTENDED_DATA_STDERR, FILEXFER_TYPE_DIRECTORY

__all__ = ["EXTENSION", "SshHost", "SshHostEntry", "SshOptions", "SshTarget", "parse_host"]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
# Seconds between keepalives, and how many may go unanswered: a host that dies during a long
# install is noticed within a minute instead of never.
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT = 3
# After a remote command exited, how long its output may stay open. A restart that starts a
# daemon without redirecting its output keeps the channel open for as long as the daemon
# lives; we stop waiting rather than hang the deploy on it.
OUTPUT_GRACE = 2.0
TAIL_LINES = 15
MAX_LINE = 16384
_CHUNK = 1 << 20
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RELEASE_NAME = re.compile(r"r(\d+)-")
_HOST = re.compile(
    r"(?:(?P<user>[^@]+)@)?"
    r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]]+))"
    r"(?::(?P<port>\d+))?\Z"
)


@dataclass(frozen=True)
class SshHost:
    """One entry of the ``hosts`` option. ``label`` (``host:port``) names it in messages and
    in `Instance.state`."""

    host: str
    port: int = 22
    user: str | None = None
    path: str = "."

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def releases(self) -> str:
        return posixpath.join(self.path, "releases")

    @property
    def current(self) -> str:
        return posixpath.join(self.path, "current")

    def release(self, version: str) -> str:
        return posixpath.join(self.path, "releases", version)


class _BadHost(ValueError):
    """A host that cannot be read; the message says why."""


_HOST_HINT = "write hosts as user@host:port or host"


def _parse_host(text: str) -> SshHost:
    found = _HOST.match(text.strip())
    if found is None:
        raise _BadHost(f"cannot read host {text!r}")
    port = int(found["port"]) if found["port"] else 22
    if not 0 < port < 65536:
        raise _BadHost(f"port {port} of host {text!r} is out of range")
    return SshHost(host=found["v6"] or found["host"], port=port, user=found["user"])


def parse_host(text: str) -> SshHost:
    """Read ``user@host:port``, ``host``, ``host:port`` or ``user@[v6addr]:port``."""
    try:
        return _parse_host(text)
    except _BadHost as exc:
        raise TargetError(f"ssh target: {exc}", hint=_HOST_HINT) from None


def _address(value: str) -> str:
    try:
        _parse_host(value)
    except _BadHost as exc:
        raise user_error("host", str(exc), _HOST_HINT) from None
    return value


def _host_entries(value: object) -> object:
    """One host or a list; each ``user@host:port`` or ``{host: user@host:port, path: ...}``."""
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list | tuple):
        raise user_error(
            "hosts",
            f"must be a list of user@host:port, got {describe(value)}",
            "deploy: {target: ssh, hosts: [deploy@10.0.0.5]}",
        )
    if not value:
        raise user_error("hosts", "must list at least one host (user@host:port)")
    entries: list[object] = []
    for entry in value:
        if not isinstance(entry, str | dict):
            raise user_error(
                "hosts",
                f"cannot read hosts entry {describe(entry)}",
                "write user@host:port, or {host: user@host:port, path: /srv/app}",
            )
        entries.append({"host": entry} if isinstance(entry, str) else entry)
    return entries


def _distinct(entries: tuple[SshHostEntry, ...]) -> tuple[SshHostEntry, ...]:
    labels = [_parse_host(entry.host).label for entry in entries]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise user_error("hosts", f"must name each host once; twice: {', '.join(twice)}")
    return entries


class SshHostEntry(Options):
    """A host that keeps its releases in a folder of its own."""

    host: Annotated[str, AfterValidator(_address)] = Field(
        description="The host, as user@host:port (user and port optional; [v6addr] for IPv6).",
        examples=["deploy@10.0.0.5:22"],
    )
    path: Text | None = Field(
        None, description="This host's folder for the releases, instead of `path`."
    )


def _hosts_schema() -> dict[str, Any]:
    """One host or a list, each as text or as an entry (what `_host_entries` reads)."""
    one = [{"type": "string", "pattern": r"\S"}, SshHostEntry.model_json_schema()]
    return {"anyOf": [*one, {"type": "array", "minItems": 1, "items": {"anyOf": one}}]}


class SshOptions(Options):
    """Ships each release to plain hosts over SSH, one host at a time, and switches a
    `current` symlink to it."""

    hosts: Annotated[
        tuple[SshHostEntry, ...],
        BeforeValidator(_host_entries),
        AfterValidator(_distinct),
        WithJsonSchema(_hosts_schema()),
    ] = Field(
        description="The hosts, deployed one after the other: each user@host:port, or "
        "{host: user@host:port, path: ...} for a host that keeps its releases elsewhere.",
        examples=[["deploy@10.0.0.5"]],
    )
    identity: Text | None = Field(
        None,
        description="Private key file to log in with, on the server's machine. Default: the "
        "server user's default keys and SSH agent.",
    )
    known_hosts: Text | None = Field(
        DEFAULT_KNOWN_HOSTS,
        description="known_hosts file that the hosts' keys are verified against (always).",
    )
    path: Text | None = Field(
        None,
        description="Folder on each host holding `releases/<version>` and the `current` link; "
        "relative to the login's home. Default: conveyor/<service>/<environment>.",
    )
    install: Command | None = Field(
        None,
        description="Command run on each host in the new release's folder before it is "
        "switched to (e.g. install dependencies).",
    )
    restart: Command | None = Field(
        None,
        description="Command run on each host after `current` points at the new release "
        "(e.g. restart the service).",
    )
    status: Command | None = Field(
        None,
        description="Command run on each host in `current` to tell whether the release runs "
        "(exit status 0: running).",
    )
    connect_timeout: Seconds = Field(
        10.0, description="Seconds to wait for a host's SSH connection."
    )
    timeout: Seconds = Field(
        600.0, description="Seconds each remote command (install, restart, status) may take."
    )


@dataclass(frozen=True)
class _Settings:
    hosts: tuple[SshHost, ...]
    identity: Path | None
    known_hosts: Path
    install: str | None
    restart: str | None
    status: str | None
    url: str | None
    connect_timeout: float
    timeout: float


class _HostError(Exception):
    """A step failed on one host; the caller adds which host and what it did about it."""


def _remote_path(value: str) -> str:
    """Relative paths are relative to the login home, for commands and SFTP alike; a leading
    ``~/`` means the same thing, and must go because quoting would stop the shell expanding it."""
    if value == "~":
        return "."
    if value.startswith("~/"):
        value = value[2:] or "."
    return posixpath.normpath(value)


def _check_version(version: str) -> str:
    if not version or "/" in version or "\0" in version or version in (".", ".."):
        raise TargetError(f"ssh target: release version {version!r} cannot name a folder")
    return version


def _release_order(name: str) -> tuple[int, str]:
    found = _RELEASE_NAME.match(name)
    return (int(found[1]) if found else -1, name)


def _pack(root: Path, folder: Path) -> Path:
    """The bundle as one tar.gz. Owners are dropped: local uids mean nothing on the host, and
    a root extraction would otherwise hand files to whoever has that uid there."""
    if not root.is_dir():
        raise FileNotFoundError(f"release folder {root} does not exist")
    out = folder / "bundle.tar.gz"

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name == "./.git" or info.name.startswith("./.git/"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(root, arcname=".", filter=anonymous)
    return out


class _Lines:
    """Bytes in, bounded clean lines out; a remote command may print anything."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        text = self._partial + self._decoder.decode(data)
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._line(line)
        while len(self._partial) > MAX_LINE:
            self._line(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]

    def close(self) -> None:
        self._partial += self._decoder.decode(b"", final=True)
        if self._partial:
            self._line(self._partial)
        self._partial = ""

    def _line(self, line: str) -> None:
        while len(line) > MAX_LINE:
            self._emit(sanitize_line(line[:MAX_LINE]))
            line = line[MAX_LINE:]
        self._emit(sanitize_line(line))


class _Session(asyncssh.SSHClientSession[bytes]):
    """Streams one remote command's output and records how it ended."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._out = _Lines(emit)
        self._err = _Lines(emit)
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.error: Exception | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        (self._err if datatype == EXTENDED_DATA_STDERR else self._out).feed(data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status
        self.exited.set()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.close()
        self._err.close()
        self.error = exc
        self.exited.set()
        self.closed.set()


class _Remote:
    """One open connection to one host, with its SFTP client opened on first use."""

    def __init__(
        self,
        spec: SshHost,
        conn: asyncssh.SSHClientConnection,
        log: Callable[[str], None],
        timeout: float,
    ) -> None:
        self.spec = spec
        self.conn = conn
        self._log = log
        self._timeout = timeout
        self._sftp: asyncssh.SFTPClient | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    def log(self, line: str) -> None:
        self._log(f"{self.label}: {line}")

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5.0)

    async def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = await self.conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                raise _HostError(f"cannot start SFTP: {_reason(exc)}") from exc
        return self._sftp

    async def run(self, command: str, what: str) -> None:
        """Run ``command``, streaming its output; raise _HostError unless it exits 0."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def emit(line: str) -> None:
            tail.append(line)
            self.log(line)

        session = _Session(emit)
        try:
            chan, _ = await self.conn.create_session(lambda: session, command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise _HostError(f"cannot run the {what}: {_reason(exc)}") from exc
        chan.write_eof()  # nothing to read: a command waiting for input must not hang
        timed_out = False
        try:
            await asyncio.wait_for(session.exited.wait(), self._timeout)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(Exception):
                chan.send_signal("TERM")
        if not timed_out:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), OUTPUT_GRACE)
            if not session.closed.is_set():
                self.log(
                    f"[conveyor] the {what} exited but something it started still holds its "
                    "output; not waiting for it (redirect a daemon's output to a file)"
                )
        chan.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.closed.wait(), 5.0)

        if timed_out:
            problem = f"{what} timed out after {self._timeout:g} s"
        elif session.exit_status == 0:
            return
        elif session.exit_status is not None:
            problem = f"{what} exited with status {session.exit_status}"
        elif session.exit_signal is not None:
            problem = f"{what} was killed by signal {session.exit_signal}"
        elif session.error is not None:
            problem = f"connection lost during the {what}: {_reason(session.error)}"
        else:
            problem = f"{what} ended without an exit status (connection lost?)"
        if tail:
            problem += "; last output:\n    " + "\n    ".join(tail)
        raise _HostError(problem)

    async def readlink(self, path: str) -> str | None:
        sftp = await self.sftp()
        try:
            return str(await sftp.readlink(path))
        except asyncssh.SFTPNoSuchFile:
            return None
        except (asyncssh.Error, OSError) as exc:
            raise _HostError(f"cannot read the link {path}: {_reason(exc)}") from exc

    async def isdir(self, path: str) -> bool:
        try:
            return await (await self.sftp()).isdir(path)
        except (asyncssh.Error, OSError) as exc:
            raise _HostError(f"cannot look at {path}: {_reason(exc)}") from exc

    async def folders(self, path: str) -> list[str]:
        try:
            names = await (await self.sftp()).readdir(path)
        except asyncssh.SFTPNoSuchFile:
            return []
        except (asyncssh.Error, OSError) as exc:
            raise _HostError(f"cannot list {path}: {_reason(exc)}") from exc
        return [
            str(n.filename)
            for n in names
            if n.attrs.type == FILEXFER_TYPE_DIRECTORY and str(n.filename) not in (".", "..")
        ]

    async def put(self, local: Path, remote: str) -> None:
        try:
            await (await self.sftp()).put(str(local), remote)
        except (asyncssh.Error, OSError) as exc:
            raise _HostError(f"upload to {remote} failed: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


@dataclass
class _HostRun:
    """What one deploy or rollback did on one host, so it can be undone."""

    remote: _Remote
    previous: str | None = None
    touched: bool = False
    current: str | None = None


@dataclass
class _Packed:
    """The bundle's tarball, made on first need and shared by every host."""

    bundle: ReleaseBundle
    folder: Path
    path: Path | None = None

    async def get(self) -> Path:
        if self.path is None:
            try:
                self.path = await asyncio.to_thread(_pack, self.bundle.root, self.folder)
            except (OSError, tarfile.TarError) as exc:
                raise _HostError(f"cannot pack {self.bundle.root}: {_reason(exc)}") from exc
        return self.path


class SshTarget(Target):
    """Releases in ``<path>/releases/<version>`` on every host, served through ``current``.

    Options: `SshOptions`, and ``url`` (the environment's address, given to the commands as
    ``CONVEYOR_DEPLOY_URL``).
    """

    name = "ssh"

    # --- configuration -------------------------------------------------------------------------

    def _settings(self) -> _Settings:
        opts = read_options(SshOptions, self.ctx.options, target=self.name)
        path = opts.path or f"conveyor/{self.ctx.service}/{self.ctx.environment}"
        hosts = tuple(
            replace(parse_host(entry.host), path=_remote_path(entry.path or path))
            for entry in opts.hosts
        )
        identity = Path(opts.identity).expanduser() if opts.identity else None
        if identity is not None and not identity.is_file():
            raise TargetError(f"ssh target: identity file {identity} does not exist")
        known_hosts = Path(opts.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        if not known_hosts.is_file():
            raise TargetError(
                f"ssh target: known_hosts file {known_hosts} does not exist; host keys are "
                "always verified",
                hint=f"after checking the fingerprints: ssh-keyscan -p PORT HOST >> {known_hosts}",
            )
        return _Settings(
            hosts=hosts,
            identity=identity,
            known_hosts=known_hosts,
            install=opts.install,
            restart=opts.restart,
            status=opts.status,
            url=common_url(self.ctx.options),
            connect_timeout=opts.connect_timeout,
            timeout=opts.timeout,
        )

    # --- the Target interface ------------------------------------------------------------------

    async def deploy(self, bundle: ReleaseBundle, previous: Instance | None) -> Instance:
        settings = self._settings()
        version = _check_version(bundle.version)
        runs: list[_HostRun] = []
        with tempfile.TemporaryDirectory(prefix="conveyor-ssh-") as tmp:
            packed = _Packed(bundle, Path(tmp))
            try:
                await packed.get()  # before any host is touched
            except _HostError as exc:
                raise TargetError(f"ssh target: {exc}", previous_serving=True) from None
            try:
                for spec in settings.hosts:
                    try:
                        run = _HostRun(await self._connect(settings, spec))
                        runs.append(run)
                        await self._deploy_host(settings, run, bundle, packed)
                    except _HostError as exc:
                        failure = f"host {spec.label}: {exc}"
                        self.ctx.log(f"[conveyor] {failure}")
                        undone, restored = await self._undo(settings, runs)
                        # Every host is back on what it served: the old release still serves.
                        raise TargetError(failure + undone, previous_serving=restored) from None
                    except asyncio.CancelledError:
                        # A cancelled deploy must not leave hosts on different releases either.
                        self.ctx.log("[conveyor] deploy cancelled; switching hosts back")
                        await self._undo(settings, runs)
                        raise
                for run in runs:
                    await self._prune(settings, run)
            finally:
                for run in runs:
                    await run.remote.close()
        return Instance(
            release_id=bundle.release_id,
            url=settings.url,
            state=self._state(settings, version, runs),
        )

    async def rollback(
        self, failed: Instance | None, to: ReleaseBundle, kept: Instance | None
    ) -> Instance:
        """Every host is attempted even when one fails: putting most hosts back on a known
        release beats stopping at the first broken one."""
        settings = self._settings()
        version = _check_version(to.version)
        runs: list[_HostRun] = []
        failures: list[str] = []
        with tempfile.TemporaryDirectory(prefix="conveyor-ssh-") as tmp:
            packed = _Packed(to, Path(tmp))
            for spec in settings.hosts:
                try:
                    run = _HostRun(await self._connect(settings, spec))
                except _HostError as exc:
                    failures.append(f"host {spec.label}: {exc}")
                    continue
                try:
                    run.previous = _release_of(await run.remote.readlink(spec.current))
                    if not await run.remote.isdir(spec.release(version)):
                        run.remote.log(f"[conveyor] {version} is gone here; uploading it again")
                        await self._stage(settings, run, to, packed)
                    await self._switch(settings, run, version)
                    await self._restart(settings, run, to)
                    runs.append(run)
                except _HostError as exc:
                    failures.append(f"host {spec.label}: {exc}")
                finally:
                    await run.remote.close()
        if failures:
            done = ", ".join(r.remote.label for r in runs) or "none"
            raise TargetError(
                f"rollback to {version} failed on {len(failures)} of {len(settings.hosts)} "
                f"hosts (back on {version}: {done}): " + "; ".join(failures)
            )
        return Instance(
            release_id=to.release_id,
            url=settings.url,
            state=self._state(settings, version, runs),
        )

    async def status(self, instance: Instance) -> TargetStatus:
        settings = self._settings()
        hosts = instance.state.get("hosts")
        expected: dict[str, str] = {}
        if isinstance(hosts, dict):
            for label, entry in hosts.items():
                if isinstance(entry, dict) and isinstance(entry.get("current"), str):
                    expected[str(label)] = entry["current"]
        results = await asyncio.gather(
            *(self._host_status(settings, spec, instance, expected) for spec in settings.hosts)
        )
        problems = [r for r in results if r is not None]
        if problems:
            return TargetStatus(False, "; ".join(problems))
        version = instance.state.get("version") or f"r{instance.release_id}"
        count = len(settings.hosts)
        return TargetStatus(True, f"{version} on {count} host{'s' if count != 1 else ''}")

    def endpoint(self, instance: Instance) -> str | None:
        try:
            return common_url(self.ctx.options)
        except TargetError:
            return None  # refused on deploy; what the environment serves is read, not checked

    # --- one host ------------------------------------------------------------------------------

    async def _connect(self, settings: _Settings, spec: SshHost) -> _Remote:
        try:
            conn = await asyncssh.connect(
                spec.host,
                port=spec.port,
                username=spec.user if spec.user is not None else (),
                known_hosts=str(settings.known_hosts),
                client_keys=[str(settings.identity)] if settings.identity else (),
                # The user's ~/.ssh/config could turn host key checks off or point elsewhere;
                # a deploy is described by conveyor.yml alone.
                config=None,
                connect_timeout=settings.connect_timeout,
                keepalive_interval=KEEPALIVE_INTERVAL,
                keepalive_count_max=KEEPALIVE_COUNT,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _HostError(
                f"host key verification failed ({exc.reason}); its key is not in "
                f"{settings.known_hosts}. Check the fingerprint, then add it with "
                f"ssh-keyscan -p {spec.port} {spec.host} >> {settings.known_hosts}"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            who = spec.user or "the server's user"
            key = f" with {settings.identity}" if settings.identity else ""
            raise _HostError(f"authentication failed for {who}{key}: {exc.reason}") from exc
        except ConnectionRefusedError as exc:
            raise _HostError("connection refused (is sshd running on that port?)") from exc
        except TimeoutError as exc:
            raise _HostError(f"connection timed out after {settings.connect_timeout:g} s") from exc
        except (asyncssh.Error, OSError, ValueError) as exc:
            raise _HostError(f"cannot connect: {_reason(exc)}") from exc
        return _Remote(spec, conn, self.ctx.log, settings.timeout)

    async def _deploy_host(
        self, settings: _Settings, run: _HostRun, bundle: ReleaseBundle, packed: _Packed
    ) -> None:
        version = bundle.version
        spec = run.remote.spec
        run.previous = _release_of(await run.remote.readlink(spec.current))
        if run.previous == version and await run.remote.isdir(spec.release(version)):
            run.remote.log(f"[conveyor] {version} is already current here; restarting it")
        else:
            await self._stage(settings, run, bundle, packed)
        run.touched = True
        await self._switch(settings, run, version)
        await self._restart(settings, run, bundle)

    async def _stage(
        self, settings: _Settings, run: _HostRun, bundle: ReleaseBundle, packed: _Packed
    ) -> None:
        """Upload and install into a fresh release folder (a leftover of a failed attempt is
        replaced), before anything serves from it."""
        spec = run.remote.spec
        release = spec.release(bundle.version)
        q = shlex.quote
        run.remote.log(f"[conveyor] uploading {bundle.version} to {release}")
        await run.remote.run(
            f"mkdir -p -- {q(spec.releases)} && rm -rf -- {q(release)} && mkdir -- {q(release)}",
            "release folder creation",
        )
        upload = posixpath.join(spec.path, f".conveyor-upload-{uuid.uuid4().hex}.tar.gz")
        try:
            await run.remote.put(await packed.get(), upload)
        except _HostError:
            with contextlib.suppress(_HostError):
                await run.remote.run(f"rm -f -- {q(upload)}", "upload cleanup")
            raise
        # Through stdin: GNU tar reads "host:file" as a remote archive. The tarball goes
        # whatever tar says, in the same round trip.
        await run.remote.run(
            f"tar -xzf - -C {q(release)} < {q(upload)}; status=$?; rm -f -- {q(upload)}; "
            "exit $status",
            "extraction",
        )
        if settings.install:
            run.remote.log(f"[conveyor] install: {settings.install}")
            await run.remote.run(
                self._user_command(settings, run, bundle, release, settings.install),
                "install command",
            )

    async def _switch(self, settings: _Settings, run: _HostRun, version: str) -> None:
        """A new link renamed over the old one: readers see the old or the new, never none."""
        q = shlex.quote
        target = posixpath.join("releases", version)
        await run.remote.run(
            f"cd -- {q(run.remote.spec.path)} && ln -sfn -- {q(target)} current.new "
            "&& mv -Tf -- current.new current",
            "switch of current",
        )
        run.current = version
        run.remote.log(f"[conveyor] current -> {target}")

    async def _restart(
        self, settings: _Settings, run: _HostRun, bundle: ReleaseBundle | _Previous
    ) -> None:
        if settings.restart:
            run.remote.log(f"[conveyor] restart: {settings.restart}")
            await run.remote.run(
                self._user_command(
                    settings, run, bundle, run.remote.spec.current, settings.restart
                ),
                "restart command",
            )

    async def _undo(self, settings: _Settings, runs: Sequence[_HostRun]) -> tuple[str, bool]:
        """Put every host this deploy switched back on its previous release; say what was done
        for the error message, and whether every host could be put back."""
        notes: list[str] = []
        restored = True
        for run in runs:
            if not run.touched:
                continue
            label = run.remote.label
            try:
                if run.remote.conn.is_closed():
                    run.remote = await self._connect(settings, run.remote.spec)
                if run.previous is None:
                    await run.remote.run(
                        f"rm -f -- {shlex.quote(run.remote.spec.current)}", "removal of current"
                    )
                    run.remote.log("[conveyor] no earlier release here: current removed")
                    notes.append(f"{label} had no earlier release: its current link was removed")
                    continue
                run.remote.log(f"[conveyor] switching back to {run.previous}")
                await self._switch(settings, run, run.previous)
                await self._restart(settings, run, _Previous(run.previous))
                notes.append(f"{label} is back on {run.previous}")
            except _HostError as exc:
                self.ctx.log(f"[conveyor] {label}: could not switch back: {exc}")
                notes.append(f"{label} could NOT be switched back: {exc}")
                restored = False
        return ("; " + "; ".join(notes) if notes else ""), restored

    async def _prune(self, settings: _Settings, run: _HostRun) -> None:
        """Keep the newest ``keep + 1`` releases, and always the serving and the previous one.
        Only folders named like our releases are touched. Failing to prune is not a failed
        deploy."""
        try:
            names = await run.remote.folders(run.remote.spec.releases)
            ours = sorted((n for n in names if _RELEASE_NAME.match(n)), key=_release_order)
            keep = set(ours[-(self.ctx.keep + 1) :]) | {run.current, run.previous}
            old = [n for n in ours if n not in keep]
            if old:
                paths = " ".join(shlex.quote(run.remote.spec.release(n)) for n in old)
                await run.remote.run(f"rm -rf -- {paths}", "removal of old releases")
                run.remote.log(f"[conveyor] removed old releases: {', '.join(old)}")
        except _HostError as exc:
            run.remote.log(f"[conveyor] could not remove old releases: {exc}")

    async def _host_status(
        self, settings: _Settings, spec: SshHost, instance: Instance, expected: Mapping[str, str]
    ) -> str | None:
        try:
            remote = await self._connect(settings, spec)
        except _HostError as exc:
            return f"host {spec.label}: {exc}"
        try:
            current = _release_of(await remote.readlink(spec.current))
            want = expected.get(spec.label)
            if current is None:
                return f"host {spec.label}: no current release"
            if want is not None and current != want:
                return f"host {spec.label}: current is {current}, expected {want}"
            if want is None and _release_order(current)[0] != instance.release_id:
                return f"host {spec.label}: current is {current}, expected r{instance.release_id}"
            if settings.status:
                run = _HostRun(remote, current=current)
                await remote.run(
                    self._user_command(
                        settings, run, _Previous(current), spec.current, settings.status
                    ),
                    "status command",
                )
            return None
        except _HostError as exc:
            return f"host {spec.label}: {exc}"
        finally:
            await remote.close()

    # --- helpers -------------------------------------------------------------------------------

    def _user_command(
        self,
        settings: _Settings,
        run: _HostRun,
        bundle: ReleaseBundle | _Previous,
        cwd: str,
        command: str,
    ) -> str:
        """The user's command as written, in ``cwd``, after quoted exports: sshd accepts no
        environment from us (no AcceptEnv), so the variables travel in the command."""
        env = {k: v for k, v in self.ctx.env.items() if k.startswith("CONVEYOR_")}
        env.update(bundle.variables())
        env["CONVEYOR_RELEASE_DIR"] = run.remote.spec.release(bundle.version)
        env["CONVEYOR_HOST"] = run.remote.label
        if run.previous and run.previous != bundle.version:
            env["CONVEYOR_PREVIOUS_RELEASE"] = run.previous
        if settings.url:
            env["CONVEYOR_DEPLOY_URL"] = settings.url
        exports = "".join(
            f"export {k}={shlex.quote(v)}; " for k, v in sorted(env.items()) if _ENV_NAME.match(k)
        )
        return f"cd -- {shlex.quote(cwd)} || exit 1; {exports}\n{command}"

    def _state(self, settings: _Settings, version: str, runs: Sequence[_HostRun]) -> dict[str, Any]:
        return {
            "version": version,
            "hosts": {
                r.remote.label: {
                    "path": r.remote.spec.path,
                    "previous": r.previous,
                    "current": r.current,
                }
                for r in runs
            },
        }


@dataclass(frozen=True)
class _Previous:
    """A release known only by its folder name (an undo, a status check)."""

    version: str

    def variables(self) -> dict[str, str]:
        found = _RELEASE_NAME.match(self.version)
        env = {"CONVEYOR_RELEASE": self.version}
        if found:
            env["CONVEYOR_RELEASE_ID"] = found[1]
        return env


def _release_of(link: str | None) -> str | None:
    """The release a ``current`` link points at (``releases/<v>`` → ``<v>``)."""
    if not link:
        return None
    return posixpath.basename(link.rstrip("/")) or None


EXTENSION = target(
    "ssh",
    SshOptions,
    SshTarget,
    "Ships the release to hosts over SSH, host by host: uploads it beside the earlier "
    "ones, runs `install`, switches the `current` link and runs `restart`; a failing host "
    "puts the hosts already done back.",
    order=30,
)
