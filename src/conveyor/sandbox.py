"""The sandbox of pipeline code: job steps, deploy commands, health and verify checks.

Anyone who can push can write a job, so nothing a pipeline runs may see the server's data
directory, database, settings or other services' workspaces (design §8, decision 0010). Each
command runs under bubblewrap in namespaces of its own:

- a private mount tree with only /usr, /etc (and the /bin, /lib... links into /usr) read-only, a
  new /dev, a new /proc (new pid namespace: the server's processes are not there), a private
  /tmp and /dev/shm, and one writable folder, bound at its own path: the job's workspace or the
  release's folder (a release also gets its environment's data folder, $CONVEYOR_DATA_DIR).
  The network is shared: tests listen on 127.0.0.1 and releases serve there.
- as root, the command runs as nobody (65534) after bubblewrap has set everything up, so files
  of the machine that only root may read stay unreadable; the writable folder is given to nobody
  first. Run by another user, the command keeps that user's id inside a user namespace.
- no new privileges (bubblewrap sets PR_SET_NO_NEW_PRIVS: set-uid programs gain nothing), and
  limits on address space, processes and file size, fixed by the server and set (soft and hard)
  before the pipeline's code starts: it cannot raise them.
- where the machine allows (conveyor.cgroups), a control group of its own that caps the memory
  and the processes of the command and all it starts together, apart from every other job:
  bubblewrap waits (--block-fd) until its sandbox process has been moved in, so nothing of the
  pipeline's runs outside it.
- an environment built from scratch (PATH, HOME, LANG and what the engine hands the command),
  delivered through a file descriptor after the privileged helpers have run, so that variables a
  pipeline declares (LD_PRELOAD...) never reach a program running as root, and values never
  show on a command line.

This module is a leaf: everything else asks it for a `Sandbox` and runs what `launch` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.cgroups import Group, JobGroups, discover
from conveyor.errors import ConveyorError
from conveyor.settings import Settings

__all__ = [
    "BUBBLEWRAP",
    "INSTALL",
    "JOB_PATH",
    "NOBODY",
    "OFF",
    "OPT_OUT",
    "Launch",
    "Limits",
    "Sandbox",
    "SandboxUnavailable",
    "configure",
    "default_sandbox",
    "format_bytes",
]

BUBBLEWRAP = "bubblewrap"
OFF = "off"
SWITCH = "CONVEYOR_SANDBOX"
OPT_OUT = "--unsafe-no-sandbox"
INSTALL = "apt-get install -y --no-install-recommends bubblewrap"
NOBODY = 65534
JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Bound read-only; /usr/local (tools such as python or git installed by hand) is inside /usr.
_SYSTEM_DIRS = ("/usr", "/etc")
# On a merged-/usr system these are links into /usr, made again as links (no mount each).
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Variables the recovery at start-up looks for in /proc/<pid>/environ (engine.recovery): they
# name no secret, so they may sit in the environment of the helpers too.
_MARKERS = ("CONVEYOR_RUN_ID", "CONVEYOR_WORKSPACE")
# The sandbox's own /tmp and /dev/shm: fresh, private tmpfs mounts, not the machine's.
_TMP = "/tmp"  # noqa: S108
_SHM = "/dev/shm"  # noqa: S108
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROBE_SECONDS = 10.0
# How long bubblewrap may take to make its sandbox process (and say which) before the command
# is given up: it is a clone() away, milliseconds on a busy machine.
_ADMIT_SECONDS = 10.0

_KIB = 1024


class SandboxUnavailable(ConveyorError):
    """Pipeline code cannot be sandboxed on this machine; the message names the fix."""


def format_bytes(size: int) -> str:
    if size < _KIB:
        return f"{size} bytes"
    for unit, factor in (("TiB", _KIB**4), ("GiB", _KIB**3), ("MiB", _KIB**2)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size / _KIB:.1f} KiB"


@dataclass(frozen=True)
class Limits:
    """What one sandboxed command may use: set by whoever runs the server or runner
    (CONVEYOR_LIMIT_*), never by a pipeline file, which can only ask for less time or log.

    ``memory`` is the memory of one command and all it starts (its control group; without
    one, the address space of each process, RLIMIT_AS); ``processes`` the processes and threads
    of one command (its control group; without one, RLIMIT_NPROC of the sandbox user, shared
    by the commands running at once), ``file_size`` the largest file a command may write
    (RLIMIT_FSIZE), ``tmp_size`` its private /tmp and /dev/shm (memory), ``job_time`` the longest
    a job may run, ``log_bytes`` the most output kept of one step.
    """

    memory: int = 16 * _KIB**3
    processes: int = 4096
    file_size: int = 8 * _KIB**3
    tmp_size: int = 1 * _KIB**3
    job_time: float = 6 * 3600.0
    log_bytes: int = 256 * _KIB**2

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The ceilings an operator set (CONVEYOR_LIMIT_*)."""
        return cls(
            memory=settings.limit_memory,
            processes=settings.limit_processes,
            file_size=settings.limit_file_size,
            tmp_size=settings.limit_tmp,
            job_time=settings.limit_job_time,
            log_bytes=settings.limit_log,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        """The ceilings in ``environ`` (CONVEYOR_LIMIT_*); a bad value raises SettingsError."""
        return cls.from_settings(Settings.from_env(environ))

    def describe(self, per_job: bool = False) -> str:
        if per_job:
            counted = (
                f"per job {self.processes} processes and {format_bytes(self.memory)} of memory"
            )
        else:
            counted = (
                f"{self.processes} processes of the sandbox user, "
                f"{format_bytes(self.memory)} of address space per process"
            )
        return (
            f"{counted}, files up to {format_bytes(self.file_size)}, "
            f"{format_bytes(self.tmp_size)} of /tmp"
        )


@dataclass
class Launch:
    """One command ready to start: pass these to Popen or create_subprocess_exec, then call
    `close` (the child keeps its own copy of ``pass_fds``)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()
    # With a control group: bubblewrap says its sandbox process's pid on `info`, then waits
    # for a byte on the other end of `block` before it runs anything of the pipeline's.
    group: Group | None = None
    info: int | None = None
    block: int | None = None

    def admit(self, pid: int | None = None) -> None:
        """After the command started (``pid``: bubblewrap's): move its sandbox into the group,
        then let it go on. Blocking (milliseconds; async callers await `admitted`). On
        failure the command is killed and ConveyorError says why; never does it run outside
        its group."""
        self._close_child_ends()
        if self.info is None or self.block is None:
            return
        try:
            child = _sandbox_pid(self.info)
            if child is None:
                return  # bubblewrap ended before making it: nothing runs, nothing to move
            assert self.group is not None
            try:
                self.group.admit(child)
            except OSError as exc:
                for victim in (child, pid):
                    if victim is not None:
                        with contextlib.suppress(OSError):
                            os.kill(victim, signal.SIGKILL)
                raise ConveyorError(
                    f"cannot limit the command's resources: {exc.strerror or exc}"
                ) from None
            os.write(self.block, b"1")
        finally:
            self._close_ends()

    async def admitted(self, pid: int) -> None:
        """`admit`, for a caller on an event loop: waits for bubblewrap's word on the loop
        (no thread), then moves the sandbox in."""
        if self.info is not None:
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(self.info, readable)
            try:
                await asyncio.wait_for(ready, _ADMIT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                self.close()
                raise ConveyorError(
                    f"the sandbox did not start within {_ADMIT_SECONDS:g} s"
                ) from None
            finally:
                loop.remove_reader(self.info)
        self.admit(pid)

    def popen(self, **options: Any) -> subprocess.Popen[Any]:
        """Start the command with Popen (``options``: its streams, session...), then `admit`
        it: what a blocking caller does, so that none waits for a command still blocked."""
        child = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, pass_fds=self.pass_fds, **options
        )
        self.admit(child.pid)
        return child

    def run(self, timeout: float) -> subprocess.CompletedProcess[bytes]:
        """Start the command, wait for it (its output captured) and remove its group: for
        short commands of this process's own (the probe)."""
        child = self.popen(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = child.communicate(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if self.group is not None:
                self.group.close()
        return subprocess.CompletedProcess(self.argv, child.returncode, out, err)

    def close(self) -> None:
        """Release what the launch holds; admits the command first if no one did."""
        if self.block is not None:
            self.admit()
        self._close_child_ends()

    def _close_child_ends(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()

    def _close_ends(self) -> None:
        for fd in (self.info, self.block):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.info = self.block = None


def _sandbox_pid(info: int) -> int | None:
    """The pid bubblewrap writes on its --info-fd (JSON, then the end of the pipe), or None
    when it ended without; ConveyorError when it says nothing for too long."""
    data = b""
    deadline = time.monotonic() + _ADMIT_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([info], [], [], max(0.0, remaining))
        if not ready:
            raise ConveyorError(f"the sandbox did not start within {_ADMIT_SECONDS:g} s")
        chunk = os.read(info, 4096)
        if not chunk:
            return None
        data += chunk
        try:
            pid = json.loads(data)["child-pid"]
        except (ValueError, KeyError, TypeError):
            continue  # not all of it yet
        return int(pid)


@dataclass(frozen=True)
class Sandbox:
    """How pipeline code runs on this machine: under bubblewrap, or (opted out) as is.

    ``setpriv`` is set when this process is root: the command then drops to nobody inside the
    sandbox. Either way the command's environment is built from scratch (`environment`) and the
    server-side ceilings of ``limits`` on time and log size apply.
    """

    mode: str = BUBBLEWRAP
    limits: Limits = field(default_factory=Limits)
    path: str = JOB_PATH
    bwrap: str = "bwrap"
    setpriv: str | None = None
    # Where each command gets a control group of its own, or why none (conveyor.cgroups).
    groups: JobGroups | None = None
    without_groups: str = ""

    @classmethod
    def off(cls, limits: Limits | None = None, path: str = JOB_PATH) -> Sandbox:
        return cls(OFF, limits or Limits(), path)

    @property
    def per_job(self) -> bool:
        """Whether memory and processes are counted per job (a control group each)."""
        return self.enabled and self.groups is not None

    @property
    def enabled(self) -> bool:
        return self.mode == BUBBLEWRAP

    @property
    def uid(self) -> int | None:
        """The user sandboxed commands run as, when it is not this process's own."""
        return NOBODY if self.enabled and self.setpriv is not None else None

    def describe(self) -> str:
        if not self.enabled:
            return "off: pipeline code runs as this user, with this machine's files"
        who = "as nobody" if self.uid is not None else "as this user, in a user namespace"
        text = f"bubblewrap, {who}; {self.limits.describe(self.per_job)}"
        if self.groups is None and self.without_groups:
            text += f" (no per-job limits: {self.without_groups})"
        return text

    @property
    def limit_scope(self) -> str:
        """What /api/v1/health reports: "job" (a control group per command), "process"
        (resource limits only) or "none" (unsandboxed)."""
        if not self.enabled:
            return "none"
        return "job" if self.groups is not None else "process"

    def environment(self, home: Path, variables: Mapping[str, str]) -> dict[str, str]:
        """Everything a command sees: a fixed base, then ``variables`` (the engine's and the
        pipeline's), never this process's own environment (its CONVEYOR_* settings, a
        virtualenv, tokens)."""
        base = {"PATH": self.path, "HOME": str(home), "LANG": "C.UTF-8"}
        if os.environ.get("TZ"):
            base["TZ"] = os.environ["TZ"]
        return {**base, **variables}

    # --- the writable folder ----------------------------------------------------------------

    def claimed(self, root: Path) -> bool:
        """Whether ``root`` is ready for the sandbox user (always, when that is us)."""
        uid = self.uid
        if uid is None:
            return True
        try:
            return os.stat(root).st_uid == uid
        except OSError:
            return False

    def claim(self, root: Path) -> None:
        """Give ``root`` and everything in it to the sandbox user (blocking; a tree walk).

        Only for folders Conveyor made itself (a workspace, a release folder). The walk holds
        each directory open and never follows a link, so nothing outside ``root`` changes
        owner even if something swapped a folder for a link meanwhile; ``root`` itself goes
        last, so that `claimed` is true only once all of it is.
        """
        uid = self.uid
        if uid is None or self.claimed(root):
            return
        for _, dirs, files, dir_fd in os.fwalk(root, topdown=False, follow_symlinks=False):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)
        os.chown(root, uid, uid, follow_symlinks=False)

    # --- starting a command -------------------------------------------------------------------

    @contextlib.contextmanager
    def launch(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        root: Path,
        cwd: Path | None = None,
        die_with_parent: bool = True,
        writable: Sequence[Path] = (),
    ) -> Iterator[Launch]:
        """The command line, environment and descriptors that run ``argv`` in ``cwd``
        (default ``root``) with ``root`` as its home and writable folder; ``writable`` names
        more folders it may write (a release's data folder), claimed first as ``root`` is.

        ``die_with_parent``: the sandbox is killed when this process dies. Jobs and checks
        want that; release processes must outlive the server (design §8) and do not.
        """
        cwd = cwd or root
        environment = self.environment(root, env)
        if not self.enabled:
            yield Launch(list(argv), environment, str(cwd))
            return
        group = self._group(die_with_parent)
        fd = _environment_file(environment, self.limits, per_job=group is not None)
        launch = Launch(
            [*self._prefix([root, *writable], cwd, die_with_parent), *_through_bash(argv)],
            self._helper_env(environment, fd),
            # bubblewrap itself starts there too: whoever looks for a release's or a step's
            # processes by their folder (/proc/<pid>/cwd) finds it, the group's leader.
            str(cwd),
            (fd,),
        )
        if group is not None:
            info_read, info_write = os.pipe()
            block_read, block_write = os.pipe()
            bwrap_options = ["--info-fd", str(info_write), "--block-fd", str(block_read)]
            launch.argv[1:1] = bwrap_options
            launch.pass_fds += (info_write, block_read)
            launch.group, launch.info, launch.block = group, info_read, block_write
        try:
            yield launch
        except BaseException:
            if group is not None:
                launch.close()
                group.close()
            raise
        finally:
            launch.close()

    def _group(self, die_with_parent: bool) -> Group | None:
        if self.groups is None:
            return None
        try:
            return self.groups.create(
                memory=self.limits.memory,
                processes=self.limits.processes,
                kind="job" if die_with_parent else "release",
            )
        except OSError as exc:
            raise ConveyorError(
                f"cannot make a control group for the command: {exc.strerror or exc}",
                hint=f"check {self.groups.describe()}, or set CONVEYOR_CGROUP=off",
            ) from None

    def _helper_env(self, environment: Mapping[str, str], fd: int) -> dict[str, str]:
        # What bubblewrap and setpriv run with: nothing the pipeline chose, since they
        # run as root (a pipeline's LD_PRELOAD would run its code there). The command's own
        # environment is read by bash from `fd` (BASH_ENV), after the drop to nobody.
        helper = {"PATH": self.path, "LANG": "C.UTF-8", "BASH_ENV": f"/dev/fd/{fd}"}
        helper.update({k: environment[k] for k in _MARKERS if k in environment})
        return helper

    def _prefix(self, roots: Sequence[Path], cwd: Path, die_with_parent: bool) -> list[str]:
        argv = [self.bwrap]
        if self.setpriv is None:
            # Unprivileged: the user namespace is what lets bubblewrap mount; none may be made
            # inside it.
            argv += ["--unshare-user", "--disable-userns"]
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        argv += _system_binds()
        tmp = str(self.limits.tmp_size)
        argv += ["--dev", "/dev", "--perms", "1777", "--size", tmp, "--tmpfs", _SHM]
        argv += ["--proc", "/proc", "--perms", "1777", "--size", tmp, "--tmpfs", _TMP]
        for root in roots:
            argv += _writable(root)
        argv += ["--chdir", str(cwd)]
        if die_with_parent:
            argv.append("--die-with-parent")
        if self.setpriv is None:
            return [*argv, "--"]
        # As root, bubblewrap keeps only what setpriv needs to become nobody; the kernel clears
        # those too when it does. Groups go as well (root's supplementary groups).
        return [
            *argv,
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--",
            self.setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ]

    # --- checking it works here ---------------------------------------------------------------

    def probe(self) -> None:
        """Run `true` in the sandbox once; SandboxUnavailable, naming the fix, if it fails."""
        if not self.enabled:
            return
        scratch = Path(tempfile.mkdtemp(prefix="conveyor-sandbox-probe-"))
        try:
            # As a workspace is: open to look into for this process, even one without
            # CAP_DAC_OVERRIDE, once it belongs to nobody.
            scratch.chmod(0o755)
            self.claim(scratch)
            with self.launch(["true"], env={}, root=scratch) as launch:
                try:
                    done = launch.run(_PROBE_SECONDS)
                except (OSError, subprocess.TimeoutExpired, ConveyorError) as exc:
                    raise _cannot(f"bwrap could not be run: {exc}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = said[-1] if said else f"exit status {done.returncode}"
            raise _cannot(
                f"bwrap fails here ({detail}); it needs user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0), "
                "or, in a container, the privileges to create namespaces"
            )


def _cannot(problem: str) -> SandboxUnavailable:
    # One line, fix included: this is what `conveyor server` and `conveyor runner` print.
    return SandboxUnavailable(
        f"cannot sandbox pipeline code: {problem}; fix that, or start with {OPT_OUT} "
        f"(or {SWITCH}=off) to run pipeline code unsandboxed"
    )


def _rlimit(resource_id: int, wanted: int) -> int:
    # Never above what this process may have: asking for more would fail the command.
    hard = resource.getrlimit(resource_id)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _environment_file(
    environment: Mapping[str, str], limits: Limits, *, per_job: bool = False
) -> int:
    """A memory file bash sources (BASH_ENV) before the command: it sets the limits (soft and
    hard: the command, now unprivileged, cannot raise them again), exports ``environment`` and
    forgets itself. Names a shell cannot export are left out, as bash itself would. Setting the
    limits here, rather than with prlimit around bubblewrap, saves starting one more program.
    ``per_job``: the command's control group counts its memory and processes, so neither the
    per-user count of processes (which every sandbox running as nobody would share) nor the
    address space of each process (which programs that reserve much and use little, as Go and
    the JVM do, would trip over) is limited."""
    fd = os.memfd_create("conveyor-env", 0)
    memory = _rlimit(resource.RLIMIT_AS, limits.memory) // _KIB
    processes = _rlimit(resource.RLIMIT_NPROC, limits.processes)
    files = _rlimit(resource.RLIMIT_FSIZE, limits.file_size) // _KIB
    # bash counts -v and -f in KiB; a failure ends the command (set -e of steps, or `||`).
    counted = "" if per_job else f"ulimit -v {memory} && ulimit -u {processes} && "
    lines = [f"{counted}ulimit -f {files} || exit 125"]
    lines += [
        f"export {name}={shlex.quote(value)}"
        for name, value in environment.items()
        if _NAME.fullmatch(name) and name != "BASH_ENV"
    ]
    lines += ["unset BASH_ENV", f"exec {fd}<&-", ""]
    try:
        os.write(fd, "\n".join(lines).encode("utf-8", "surrogateescape"))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _through_bash(argv: Sequence[str]) -> list[str]:
    # The environment arrives through BASH_ENV, which only bash reads: anything else is started
    # by a bash that has read it.
    if argv and argv[0] == "bash":
        return list(argv)
    return ["bash", "--noprofile", "--norc", "-c", 'exec "$@"', "bash", *argv]


@functools.cache
def _system_binds() -> tuple[str, ...]:
    argv: list[str] = []
    for name in _SYSTEM_DIRS:
        if os.path.isdir(name):
            argv += ["--ro-bind", name, name]
    for name in _SYSTEM_LINKS:
        if os.path.islink(name):
            argv += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            argv += ["--ro-bind", name, name]
    # A resolver managed elsewhere (systemd-resolved) links out of /etc: the link needs its file.
    resolv = os.path.realpath("/etc/resolv.conf")
    if not any(resolv == d or resolv.startswith(d + "/") for d in _SYSTEM_DIRS):
        argv += ["--ro-bind-try", resolv, resolv]
    return tuple(argv)


def _writable(root: Path) -> list[str]:
    """The writable folder at its own path, so the paths the engine hands the command (the
    workspace, the release folder) mean the same inside; the folders above it are empty ones,
    made traversable (bubblewrap would make them root's alone)."""
    path = os.path.abspath(root)
    # Below /tmp is fine (the folder is bound over the private /tmp); below what is mounted
    # read-only, or made by the sandbox itself, it could not be.
    inside = (*_SYSTEM_DIRS, *_SYSTEM_LINKS, "/dev", "/proc")
    if path in ("/", _TMP) or any(path == d or path.startswith(d + "/") for d in inside):
        raise ConveyorError(f"cannot sandbox a command in {path}: it is a system folder")
    argv: list[str] = []
    parents = [str(p) for p in reversed(Path(path).parents) if str(p) not in ("/", _TMP)]
    for parent in parents:
        argv += ["--perms", "0755", "--dir", parent]
    return [*argv, "--bind", path, path]


def configure(
    *,
    disabled: bool = False,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> Sandbox:
    """The sandbox for this process, checked to work: ``disabled`` (the operator's
    --unsafe-no-sandbox) or CONVEYOR_SANDBOX=off give the unsandboxed one. Raises
    SandboxUnavailable (one line naming the fix) when bubblewrap is missing or fails here.

    ``settings``: the process's (CONVEYOR_SANDBOX, CONVEYOR_JOB_PATH, CONVEYOR_LIMIT_*,
    CONVEYOR_CGROUP), read where it started; ``environ``: whose PATH finds bwrap and setpriv
    (default this process's), and, given no ``settings``, the settings too."""
    environ = os.environ if environ is None else environ
    settings = Settings.from_env(environ) if settings is None else settings
    limits = Limits.from_settings(settings)
    path = settings.job_path or JOB_PATH
    if disabled or settings.sandbox == OFF:
        return Sandbox.off(limits, path)
    search = environ.get("PATH") or os.defpath
    bwrap = shutil.which("bwrap", path=search)
    if bwrap is None:
        raise _cannot(f"bubblewrap (bwrap) is not installed; install it with `{INSTALL}`")
    setpriv = shutil.which("setpriv", path=search) if os.geteuid() == 0 else ""
    if setpriv is None:
        raise _cannot("setpriv (util-linux) is not installed")
    found = discover(settings.cgroup)
    groups, without = (found, "") if isinstance(found, JobGroups) else (None, found)
    sandbox = Sandbox(BUBBLEWRAP, limits, path, bwrap, setpriv or None, groups, without)
    sandbox.probe()
    return sandbox


@functools.cache
def _configured(settings: Settings, search: str) -> Sandbox:
    return configure(settings=settings, environ={"PATH": search} if search else {})


def default_sandbox(settings: Settings | None = None) -> Sandbox:
    """The sandbox of a caller that was given none: configured from ``settings`` (those its
    process read at start; none given: this process's environment, read now), probed once
    per setting. Never silently unsandboxed: raises SandboxUnavailable like `configure`."""
    settings = Settings.from_env() if settings is None else settings
    return _configured(settings, os.environ.get("PATH", ""))
