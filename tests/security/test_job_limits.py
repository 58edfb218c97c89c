"""Each job's memory and processes are its own: a control group per sandboxed command
(conveyor.cgroups), so that one job's fork bomb or leak cannot starve the jobs beside it, and a
pipeline cannot raise what the operator allowed.

Real cgroups of this machine (v1 memory and pids hierarchies, as root in CI), real bubblewrap."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from conveyor.cgroups import JobGroups, _v1_folders, discover
from conveyor.sandbox import Launch, Limits, Sandbox
from tests.conftest import Conveyor, GitRepo
from tests.security.conftest import limited, unavailable
from tests.serverproc import until

ROOT = os.geteuid() == 0
# Forks until the kernel refuses (or `wanted` have started), says how many did, and keeps them
# alive until its input closes.
FORKS = """
import os, sys
started = 0
for _ in range({wanted}):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.read(0, 1)
        os._exit(0)
    started += 1
print(started, flush=True)
os.read(0, 1)
"""


@pytest.fixture
def grouped(sandbox: Sandbox) -> Sandbox:
    if not sandbox.per_job:
        unavailable(
            f"no control group per job here ({sandbox.without_groups})",
            "run as root on cgroup v1, or set CONVEYOR_CGROUP to a delegated cgroup v2 folder",
        )
    return sandbox


@dataclasses.dataclass
class Forks:
    """A sandboxed process holding as many children as it could start."""

    child: subprocess.Popen[str]
    started: int
    launch: Launch

    def end(self) -> None:
        self.child.kill()
        self.child.communicate(timeout=30)  # and closes its pipes
        if self.launch.group is not None:
            self.launch.group.close()


def forks(sandbox: Sandbox, root: Path, wanted: int) -> Forks:
    root.mkdir()
    sandbox.claim(root)
    with sandbox.launch(
        ["python3", "-c", FORKS.format(wanted=wanted)], env={}, root=root
    ) as launch:
        child = launch.popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return Forks(child, int(child.stdout.readline() or -1), launch)


def test_a_fork_bomb_in_one_job_leaves_the_job_beside_it_its_processes(
    grouped: Sandbox, tmp_path: Path
) -> None:
    limited = dataclasses.replace(grouped, limits=Limits(processes=24))
    bomb = forks(limited, tmp_path / "bomb", wanted=200)
    try:
        assert 0 < bomb.started < 24  # the bomb's own group stopped it
        other = forks(limited, tmp_path / "other", wanted=12)
        other.end()
        assert other.started == 12  # its neighbour, still running, took nothing from it
    finally:
        bomb.end()
    if not ROOT:
        return
    # The same two jobs counted per user (resource limits alone; as root every sandbox runs as
    # nobody): the bomb leaves its neighbour nothing. What the groups are for.
    per_user = dataclasses.replace(limited, groups=None)
    bomb = forks(per_user, tmp_path / "bomb-per-user", wanted=200)
    try:
        other = forks(per_user, tmp_path / "other-per-user", wanted=12)
        other.end()
        assert other.started < 12, (bomb.started, other.started)
    finally:
        bomb.end()


def test_removing_a_group_ends_everything_the_command_left_in_it(
    grouped: Sandbox, tmp_path: Path
) -> None:
    held = forks(grouped, tmp_path / "ws", wanted=5)
    group = held.launch.group
    assert group is not None
    assert held.started == 5
    assert len(group.members()) >= 6  # the command and its five children
    group.close()
    held.child.communicate(timeout=30)
    assert held.child.returncode != 0
    until(lambda: not group.members(), what="the killed processes to leave their group")
    # Removed at once, or (its last processes still exiting then) when the next group is made.
    assert grouped.groups is not None
    grouped.groups.create(memory=2**30, processes=8).close()
    assert not any(folder.exists() for folder in group.folders)


def _groups_of(sandbox: Sandbox) -> set[Path]:
    assert sandbox.groups is not None
    return {p for p in sandbox.groups.parents[-1].iterdir() if p.is_dir()}


@pytest.mark.integration
def test_a_job_over_its_memory_is_stopped_saying_so_and_the_group_is_gone(
    grouped: Sandbox, repo: GitRepo, conveyor: Conveyor
) -> None:
    before = _groups_of(grouped)
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: hungry
            jobs:
              eat:
                run: python3 -c "food = b'x' * (400 << 20)"
              fine:
                run: python3 -c "food = b'x' * (40 << 20)"
            """
        },
    )
    result = limited(conveyor, memory="128M")("run", timeout=120)
    assert result.returncode == 1, result.output
    jobs = {j["name"]: j for j in conveyor("show", "1", "--json", check=True).json()["jobs"]}
    assert jobs["fine"]["status"] == "succeeded", jobs
    assert "it ran out of memory (this runner allows 128.0 MiB per job)" in jobs["eat"]["reason"]
    # Nothing of either step is left running in its group; empty groups go at the next sweep.
    made = _groups_of(grouped) - before
    assert all(not (group / "cgroup.procs").read_text().split() for group in made)
    assert grouped.groups is not None
    grouped.groups.sweep(older_than=0)
    assert not (_groups_of(grouped) & made)


def test_groups_are_found_from_this_process_and_a_bad_setting_says_why(tmp_path: Path) -> None:
    cgroup = "12:pids:/ci/job\n4:memory:/ci/job\n0::/\n"
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids\n"
        "31 25 0:27 /ci /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n"
    )
    assert _v1_folders(cgroup, mountinfo, ("memory", "pids")) == {
        "pids": Path("/sys/fs/cgroup/pids/ci/job"),
        "memory": Path("/sys/fs/cgroup/memory/job"),
    }
    assert discover("off") == "per-job groups turned off (CONVEYOR_CGROUP=off)"
    missing = discover(str(tmp_path))
    assert isinstance(missing, str)
    assert f"CONVEYOR_CGROUP={tmp_path} is not a cgroup v2 folder" in missing
    (tmp_path / "cgroup.subtree_control").write_text("cpu pids\n")
    assert "echo '+memory' > " in str(discover(str(tmp_path)))
    assert not isinstance(discover("off"), JobGroups)
