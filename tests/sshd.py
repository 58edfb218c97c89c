"""Real OpenSSH daemons for tests, each on a free port of 127.0.0.1 (docs/machine.md, "SSH").

A test asks for `sshd` (import the fixture: `from tests.sshd import sshd_servers  # noqa: F401`) and
starts as many "hosts" as it needs with `sshd.start()`; they share one client key, whose
``identity`` path and a ``known_hosts`` file trusting every started host are on the factory.
Every daemon is stopped by the pid in its PidFile when the test ends.

Without sshd the fixture skips, except in CI (CI=true), where it fails: CI must install
PACKAGES. Nothing here sleeps to synchronise: waits poll a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from tests.serverproc import free_port, until

PACKAGES = "openssh-server"
SSHD = Path("/usr/sbin/sshd")
# sshd refuses to start without its privilege separation folder.
PRIVSEP_DIR = Path("/run/sshd")
START_SECONDS = 15.0
STOP_SECONDS = 10.0

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {pidfile}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
{extra}"""


def _unavailable(reason: str) -> NoReturn:
    message = f"{reason}: install it with apt-get install -y --no-install-recommends {PACKAGES}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (in CI the SSH tests must run, never skip)", pytrace=False)
    pytest.skip(message)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "conveyor-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _version_extra() -> str:
    """OpenSSH 9.8 and later penalise a source address after failed logins (our host key tests
    make them on purpose); older ones reject the option, so it is only written when known."""
    out = subprocess.run([str(SSHD), "-V"], check=False, capture_output=True, text=True, timeout=10)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    if found and (int(found[1]), int(found[2])) >= (9, 8):
        return "PerSourcePenalties no\n"
    return ""


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rfind(")") + 2 :][:1] not in ("Z", "X", "")


@dataclass
class SshHost:
    """One running sshd. ``address`` is the ``user@host:port`` a deploy target is given."""

    port: int
    folder: Path
    user: str
    pid: int = 0

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.folder / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        return self.pid > 0 and _alive(self.pid)

    def stop(self) -> None:
        """SIGTERM by pid, bounded wait, SIGKILL if it lingers. Sessions already open keep their
        own processes, which exit when their client disconnects."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            until(lambda: not self.alive(), STOP_SECONDS, f"sshd {self.pid} to die")


@dataclass
class SshServers:
    """Factory of sshd hosts sharing one client key and one known_hosts file."""

    folder: Path
    identity: Path
    known_hosts: Path
    host_key: Path
    extra: str = ""
    hosts: list[SshHost] = field(default_factory=list)

    def start(self) -> SshHost:
        """Start one more sshd and wait (bounded) until its port accepts connections."""
        port = free_port()
        folder = self.folder / f"host-{port}"
        folder.mkdir(parents=True)
        host = SshHost(port=port, folder=folder, user=getpass.getuser())
        config = folder / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=port,
                host_key=self.host_key,
                pidfile=folder / "sshd.pid",
                authorized_keys=self.folder / "authorized_keys",
                extra=self.extra,
            )
        )
        self.hosts.append(host)
        started = subprocess.run(
            [str(SSHD), "-f", str(config), "-E", str(folder / "sshd.log")],
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=False,
        )
        assert started.returncode == 0, f"sshd did not start: {started.stderr}{host.log}"
        pidfile = folder / "sshd.pid"
        until(
            lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(),
            START_SECONDS,
            f"sshd on :{port} to write its pid file",
        )
        host.pid = int(pidfile.read_text().strip())
        deadline = time.monotonic() + START_SECONDS
        while not _accepts(port):
            if not host.alive():
                raise AssertionError(f"sshd on :{port} exited:\n{host.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd on :{port} did not listen within {START_SECONDS:g}s")
            time.sleep(0.02)
        public = (self.host_key.parent / f"{self.host_key.name}.pub").read_text().split()
        with self.known_hosts.open("a") as known:
            known.write(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.stop()


@pytest.fixture(name="sshd")
def sshd_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServers]:
    """A factory of real sshd hosts for one test; all are stopped when the test ends."""
    if not SSHD.exists():
        _unavailable(f"{SSHD} is not installed")
    if shutil.which("ssh-keygen") is None:
        _unavailable("ssh-keygen is not installed")
    try:
        PRIVSEP_DIR.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        _unavailable(f"{PRIVSEP_DIR} is missing and cannot be made (run as root)")
    folder = tmp_path_factory.mktemp("sshd")
    keys = folder / "keys"
    keys.mkdir()
    _keygen(keys / "host_ed25519")
    _keygen(keys / "client_ed25519")
    (folder / "authorized_keys").write_text((keys / "client_ed25519.pub").read_text())
    known_hosts = folder / "known_hosts"
    known_hosts.write_text("")
    servers = SshServers(
        folder=folder,
        identity=keys / "client_ed25519",
        known_hosts=known_hosts,
        host_key=keys / "host_ed25519",
        extra=_version_extra(),
    )
    try:
        yield servers
    finally:
        servers.close()
