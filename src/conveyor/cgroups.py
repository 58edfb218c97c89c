"""Control groups for sandboxed commands: the memory and the processes of one job counted
together, and apart from every other job (decision 0010).

Resource limits (`ulimit`) count per process, or per user: as root every sandbox runs as
nobody, so one job's fork bomb would use up the process limit of all of them. A control group
per command counts what the command and everything it starts use, whoever they run as.

Where the groups are made:

- cgroup v1 (a controller per hierarchy, as on this project's CI machines): a folder
  ``conveyor`` below this process's own group in the ``memory`` and ``pids`` hierarchies, found
  from /proc/self/cgroup and /proc/self/mountinfo. Needs the right to write there (root, or a
  hierarchy delegated to this user).
- cgroup v2 (one hierarchy): a process may not sit in a group whose children have controllers,
  so the operator names a folder delegated to Conveyor (``CONVEYOR_CGROUP``, e.g. a systemd
  unit's ``Delegate=yes`` subgroup) with ``memory`` and ``pids`` in its cgroup.subtree_control.

When neither works, `discover` says why in one line and the sandbox keeps its per-process
limits; `conveyor server`, the runner and /api/v1/health say which of the two applies.

This module is a leaf: it knows files and processes, nothing of jobs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SETTING", "Group", "GroupReport", "JobGroups", "discover"]

SETTING = "CONVEYOR_CGROUP"
_PARENT = "conveyor"
# A group found empty this long after it was made is left over (its command ended, or the
# server died before removing it): old enough that no command is still on its way in.
_LEFTOVER_SECONDS = 60.0


@dataclass(frozen=True)
class GroupReport:
    """What a command met in its group: the kernel's own counters."""

    oom_kills: int = 0
    refused_forks: int = 0


@dataclass
class Group:
    """One command's group: a folder per hierarchy (v1) or one folder (v2)."""

    folders: tuple[Path, ...]
    version: int

    def admit(self, pid: int) -> None:
        """Move ``pid`` (not yet running pipeline code) into the group; OSError if it cannot."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def report(self) -> GroupReport:
        memory, pids = (self.folders[0], self.folders[-1])
        if self.version == 1:
            oom = _counter(memory / "memory.oom_control", "oom_kill")
        else:
            oom = _counter(memory / "memory.events", "oom_kill")
        return GroupReport(oom_kills=oom, refused_forks=_counter(pids / "pids.events", "max"))

    def members(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def close(self) -> None:
        """Kill whatever is still in the group, then remove it. Never waits: a group whose
        last processes are still on their way out (the kernel reaps them after the command
        ended) is removed by the next `JobGroups.create` or `JobGroups.sweep`."""
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for folder in self.folders:
            _remove(folder)


# Groups of commands that ended while their last processes were still exiting.
_LEFT: set[Path] = set()


def _remove(folder: Path) -> None:
    try:
        folder.rmdir()
    except FileNotFoundError:
        _LEFT.discard(folder)
    except OSError:
        _LEFT.add(folder)  # EBUSY: tried again later
    else:
        _LEFT.discard(folder)


@dataclass(frozen=True)
class JobGroups:
    """Where this process makes groups: the parent folder in each hierarchy."""

    version: int
    parents: tuple[Path, ...]

    def describe(self) -> str:
        return f"cgroup v{self.version} below {self.parents[0]}"

    def create(self, *, memory: int, processes: int, kind: str = "job") -> Group:
        """A new empty group limited to ``memory`` bytes and ``processes`` processes;
        OSError when the kernel refuses."""
        for left in list(_LEFT):
            _remove(left)
        name = f"{kind}-{secrets.token_hex(6)}"
        folders = tuple(parent / name for parent in self.parents)
        made: list[Path] = []
        try:
            for folder in folders:
                folder.mkdir()
                made.append(folder)
            if self.version == 1:
                memory_folder, pids_folder = folders
                (memory_folder / "memory.limit_in_bytes").write_text(str(memory))
                swap = memory_folder / "memory.memsw.limit_in_bytes"
                if swap.exists():  # with swap accounting on: no way around the limit by swap
                    swap.write_text(str(memory))
            else:
                memory_folder = pids_folder = folders[0]
                (memory_folder / "memory.max").write_text(str(memory))
                with contextlib.suppress(FileNotFoundError):
                    (memory_folder / "memory.swap.max").write_text("0")
            (pids_folder / "pids.max").write_text(str(processes))
        except BaseException:
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        return Group(folders, self.version)

    def sweep(self, older_than: float = _LEFTOVER_SECONDS) -> int:
        """Remove empty groups made more than ``older_than`` seconds ago (left by commands that
        ended without `Group.close`: releases, or a server that died); how many went."""
        removed = 0
        now = time.time()
        for parent in self.parents:
            with contextlib.suppress(OSError):
                for entry in os.scandir(parent):
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    try:
                        if now - entry.stat(follow_symlinks=False).st_ctime < older_than:
                            continue
                        os.rmdir(entry.path)
                        removed += 1
                    except OSError:
                        continue  # still in use (EBUSY), or gone meanwhile
        return removed


def _counter(path: Path, name: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return 0


def _v1_folders(
    cgroup_text: str, mountinfo_text: str, controllers: Iterable[str]
) -> dict[str, Path]:
    """This process's group in each wanted v1 hierarchy, as a folder."""
    wanted = set(controllers)
    paths: dict[str, str] = {}
    for line in cgroup_text.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0":
            continue
        for name in names.split(","):
            if name in wanted:
                paths[name] = path
    folders: dict[str, Path] = {}
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or fields[dash + 1] != "cgroup":
            continue
        root, mount_point, options = fields[3], fields[4], fields[dash + 3].split(",")
        for name in wanted & set(options):
            group_path = paths.get(name)
            if group_path is None:
                continue
            relative = os.path.relpath(group_path, root) if root != "/" else group_path.lstrip("/")
            folders[name] = Path(mount_point) / ("" if relative == "." else relative)
    return folders


def _usable(groups: JobGroups) -> str | None:
    """Why groups cannot be made here, or None: makes and removes one."""
    try:
        for parent in groups.parents:
            parent.mkdir(exist_ok=True)
        probe = groups.create(memory=64 * 2**20, processes=8, kind="probe")
    except OSError as exc:
        return f"cannot make a group below {groups.parents[0]}: {exc.strerror or exc}"
    probe.close()
    groups.sweep()
    return None


def discover(setting: str = "") -> JobGroups | str:
    """The groups this process can make, or one line saying why none (and what to do).
    ``setting``: CONVEYOR_CGROUP (Settings.cgroup): empty, ``off`` or a delegated folder."""
    setting = setting.strip()
    if setting.lower() == "off":
        return f"per-job groups turned off ({SETTING}=off)"
    if setting:
        folder = Path(setting)
        try:
            enabled = (folder / "cgroup.subtree_control").read_text().split()
        except OSError as exc:
            return f"{SETTING}={setting} is not a cgroup v2 folder ({exc.strerror or exc})"
        missing = [c for c in ("memory", "pids") if c not in enabled]
        if missing:
            return (
                f"{SETTING}={setting} does not hand {' and '.join(missing)} to its children: "
                f"echo '{' '.join('+' + c for c in missing)}' > {folder}/cgroup.subtree_control"
            )
        groups = JobGroups(2, (folder,))
    else:
        try:
            cgroup_text = Path("/proc/self/cgroup").read_text()
            mountinfo_text = Path("/proc/self/mountinfo").read_text()
        except OSError as exc:
            return f"cannot read this process's control groups ({exc.strerror or exc})"
        folders = _v1_folders(cgroup_text, mountinfo_text, ("memory", "pids"))
        if set(folders) != {"memory", "pids"}:
            return (
                "no cgroup v1 memory and pids hierarchies here; on cgroup v2 set "
                f"{SETTING} to a folder delegated to Conveyor with +memory +pids in its "
                "cgroup.subtree_control"
            )
        groups = JobGroups(1, (folders["memory"] / _PARENT, folders["pids"] / _PARENT))
    problem = _usable(groups)
    return groups if problem is None else problem
