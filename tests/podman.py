"""A private podman for tests: its own configuration, storage and a tiny local busybox image.

The project's machines have no internet, no bridge networking, hybrid cgroups and a capped
nofile limit, so podman runs with the configuration of docs/machine.md ("Podman and buildah"):
runc, cgroupfs, vfs storage, no network namespace by default. The storage lives under pytest's
tmp folder and everything made there is removed when the session ends.

Import the fixture into a test module (`from tests.podman import podman_session  # noqa: F401`)
and ask for `podman`. Without podman the fixture skips, except in CI (CI=true), where it fails:
CI must install PACKAGES.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

IMAGE = "localhost/conveyor-test-busybox"
# What CI installs (apt-get install -y --no-install-recommends ...). catatonit is podman's
# `--init`; it is only a Recommends of podman, so --no-install-recommends leaves it out.
PACKAGES = "podman buildah runc catatonit busybox-static"
BUSYBOX = Path("/bin/busybox")
# Where podman and runc live on Debian; a non-root PATH may lack the sbin folders.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/libexec/podman"]
)
# Made by podman outside the storage configured here, whatever the configuration says (root's
# image copy cache): removed after the session when the session made them, never when they were
# there before. /run/libpod is avoided with tmp_dir, and checked for all the same.
_BLOB_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
_SYSTEM_DIRS = [Path("/run/libpod"), _BLOB_CACHE.parent, _BLOB_CACHE.parent.parent]
_CGROUP_ROOT = Path("/sys/fs/cgroup")

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
netns = "none"
init_path = "{init}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{root}/libpod"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


@dataclass(frozen=True)
class Podman:
    """The session's podman: ``env`` holds CONTAINERS_CONF and CONTAINERS_STORAGE_CONF."""

    root: Path
    env: dict[str, str]
    image: str = IMAGE

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result

    def containers(self, prefix: str = "conveyor-") -> list[str]:
        """Names of every container (running or not) whose name starts with ``prefix``."""
        out = self("ps", "-a", "--format", "{{.Names}}").stdout
        return [n for n in out.split() if n.startswith(prefix)]


def _unavailable(reason: str) -> NoReturn:
    message = f"{reason}: install it with apt-get install -y --no-install-recommends {PACKAGES}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (in CI the container tests must run, never skip)", pytrace=False)
    pytest.skip(message)


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only, which is all we meet here
        return False
    order = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[0x20:0x28], order)
    phentsize = int.from_bytes(data[0x36:0x38], order)
    phnum = int.from_bytes(data[0x38:0x3A], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start : start + 4], order) == 3:  # PT_INTERP
            return False
    return True


def _rootfs_tar(busybox: Path) -> bytes:
    """A root filesystem of busybox and a symlink per applet, as `busybox --install -s` makes
    (done from `--list` so that it needs no chroot)."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, link: str = "", data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder in ("bin", "etc", "root", "workspace"):
            add(folder, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, data=busybox.read_bytes())
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\n")
    return buffer.getvalue()


def _libpod_cgroups() -> list[Path]:
    return sorted(_CGROUP_ROOT.glob("*/libpod_parent"))


def _remove_empty_tree(folder: Path) -> None:
    """rmdir bottom-up; a cgroup (or folder) that still holds something stays."""
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir(), reverse=True):
        if child.is_dir() and not child.is_symlink():
            _remove_empty_tree(child)
    with contextlib.suppress(OSError):
        folder.rmdir()


@pytest.fixture(scope="session", name="podman")
def podman_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """podman with the machine's configuration and the image IMAGE, for the whole session.

    CONTAINERS_CONF and CONTAINERS_STORAGE_CONF are exported to the test process (so every
    `conveyor` subprocess and the podman it starts use them) until the session ends.
    """
    if shutil.which("podman", path=_SEARCH_PATH) is None:
        _unavailable("podman is not installed")
    if shutil.which("runc", path=_SEARCH_PATH) is None:
        _unavailable("runc is not installed")
    init = shutil.which("catatonit", path=_SEARCH_PATH)
    if init is None:
        _unavailable("catatonit (podman's --init) is not installed")
    if not BUSYBOX.exists() or not _is_static_elf(BUSYBOX):
        _unavailable(f"{BUSYBOX} is missing or not statically linked (busybox-static)")

    existed = {p for p in [_BLOB_CACHE, *_SYSTEM_DIRS, *_libpod_cgroups()] if p.exists()}
    root = tmp_path_factory.mktemp("podman")
    (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root, init=init))
    (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
    env = {
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
    }
    engine = Podman(root=root, env=env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        if shutil.which("podman") is None:  # e.g. /usr/sbin missing from a non-root PATH
            patch.setenv("PATH", _SEARCH_PATH)
        try:
            (root / "rootfs.tar").write_bytes(_rootfs_tar(BUSYBOX))
            engine("import", "--quiet", str(root / "rootfs.tar"), IMAGE)
            smoke = engine(
                "run", "--rm", "--network", "host", "--init", IMAGE, "sh", "-c", "echo ok"
            )
            assert smoke.stdout.strip() == "ok", smoke.stdout + smoke.stderr
            yield engine
        finally:
            engine("rm", "--all", "--force", "--time", "0", check=False)
            engine("rmi", "--all", "--force", check=False)
            shutil.rmtree(root, ignore_errors=True)
            if _BLOB_CACHE not in existed:
                _BLOB_CACHE.unlink(missing_ok=True)
            for path in [*_SYSTEM_DIRS, *_libpod_cgroups()]:
                if path not in existed:
                    _remove_empty_tree(path)
