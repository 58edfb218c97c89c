"""The `ssh` target against real sshd daemons on 127.0.0.1 (tests/sshd.py).

The "hosts" share this machine's filesystem, so each gets its own ``path`` and the tests read
the ``current`` links, release folders and the restart log straight from disk. The restart
command appends "<VERSION file> <host> <CONVEYOR_RELEASE> <secret or unset>" to a log, which
shows which release was restarted where, and that only CONVEYOR_* variables travel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import textwrap
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conveyor.targets.base import Instance, ReleaseBundle, TargetContext, TargetError
from conveyor.targets.ssh import SshHost, SshTarget, parse_host
from tests.serverproc import free_port
from tests.sshd import SshHost as Sshd
from tests.sshd import SshServers, sshd_servers  # noqa: F401

T = TypeVar("T")
integration = pytest.mark.integration

APP = """\
    #!/bin/sh
    echo "restarting $(cat VERSION) on $CONVEYOR_HOST"
    echo "$(cat VERSION) $CONVEYOR_HOST $CONVEYOR_RELEASE ${SECRET_TOKEN:-unset}" \\
        >> "$CONVEYOR_TEST_OUT/restarts.log"
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def sha_for(n: int) -> str:
    return f"{n:07d}" + "abcdef0123456789abcdef0123456789a"


def make_bundle(tmp_path: Path, release_id: int, sha: str | None = None) -> ReleaseBundle:
    sha = sha or sha_for(release_id)
    root = tmp_path / "bundles" / str(release_id)
    root.mkdir(parents=True)
    bundle = ReleaseBundle(release_id=release_id, service="web", sha=sha, root=root)
    (root / "VERSION").write_text(bundle.version + "\n")
    app = root / "app.sh"
    app.write_text(textwrap.dedent(APP))
    app.chmod(0o755)
    (root / "dist").mkdir()
    (root / "dist" / "web-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 not really a wheel")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return bundle


class Deployment:
    """One environment deployed by an SshTarget, and what it wrote to the deployment log."""

    def __init__(
        self,
        tmp_path: Path,
        servers: SshServers,
        hosts: list[Any],
        *,
        keep: int = 3,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.out = tmp_path / "out"
        self.out.mkdir(exist_ok=True)
        self.lines: list[str] = []
        self.options: dict[str, Any] = {
            "hosts": hosts,
            "identity": str(servers.identity),
            "known_hosts": str(servers.known_hosts),
            "install": 'echo "installing $CONVEYOR_RELEASE"; touch installed',
            "restart": "./app.sh",
            "connect_timeout": 5,
            "timeout": 30,
            **options,
        }
        self.ctx = TargetContext(
            service="web",
            environment="production",
            tier="production",
            options=self.options,
            env={
                "CONVEYOR_TEST_OUT": str(self.out),
                "CONVEYOR_SERVICE": "web",
                "SECRET_TOKEN": "s3cret",
                **(env or {}),
            },
            state_dir=tmp_path / "state",
            log=self.lines.append,
            keep=keep,
        )
        self.target = SshTarget(self.ctx)

    def restarts(self) -> list[str]:
        log = self.out / "restarts.log"
        return log.read_text().splitlines() if log.exists() else []

    def deploy(self, bundle: ReleaseBundle, previous: Instance | None = None) -> Instance:
        return run(self.target.deploy(bundle, previous))


def current(path: Path) -> str | None:
    link = path / "current"
    return str(link.readlink()) if link.is_symlink() else None


def releases(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "releases").iterdir())


def two_hosts(tmp_path: Path, sshd: SshServers) -> tuple[Sshd, Sshd, Path, Path, list[Any]]:
    a, b = sshd.start(), sshd.start()
    path_a, path_b = tmp_path / "host-a" / "app", tmp_path / "host-b" / "app"
    hosts = [{"host": a.address, "path": str(path_a)}, {"host": b.address, "path": str(path_b)}]
    return a, b, path_a, path_b, hosts


# --- configuration, no sshd needed ------------------------------------------------------------


def test_host_entries_are_read_with_user_port_and_ipv6() -> None:
    assert parse_host("deploy@10.0.0.5:2222") == SshHost("10.0.0.5", 2222, "deploy")
    assert parse_host("web1.internal") == SshHost("web1.internal", 22, None)
    assert parse_host("ops@[::1]:2200").label == "[::1]:2200"
    for bad in ("", "a@b@c", "host:99999", "host:port"):
        with pytest.raises(TargetError):
            parse_host(bad)


def test_missing_hosts_or_known_hosts_are_clear_errors(tmp_path: Path) -> None:
    def ctx(options: dict[str, Any]) -> TargetContext:
        return TargetContext("web", "prod", "production", options, {}, tmp_path, print)

    with pytest.raises(TargetError, match="option hosts is required"):
        run(SshTarget(ctx({})).status(Instance(1)))
    missing = {"hosts": ["127.0.0.1"], "known_hosts": str(tmp_path / "nope")}
    with pytest.raises(TargetError, match="host keys are always verified"):
        run(SshTarget(ctx(missing)).status(Instance(1)))


# --- against real sshd ------------------------------------------------------------------------


@integration
def test_deploy_to_two_hosts_switches_both_and_restarts_each(
    tmp_path: Path, sshd: SshServers
) -> None:
    a, b, path_a, path_b, hosts = two_hosts(tmp_path, sshd)
    env = Deployment(tmp_path, sshd, hosts, url="http://127.0.0.1:8080")
    bundle = make_bundle(tmp_path, 1)
    version = bundle.version

    instance = env.deploy(bundle)

    for path in (path_a, path_b):
        assert current(path) == f"releases/{version}"
        release = path / "releases" / version
        assert (release / "VERSION").read_text().strip() == version
        assert (release / "dist" / "web-1.0-py3-none-any.whl").exists()
        assert (release / "installed").exists(), "install ran in the new release folder"
        assert not (release / ".git").exists(), "the bundle is shipped without .git"
        assert not list(path.glob(".conveyor-upload-*")), "the uploaded tarball is removed"
    # Restarted on each host in turn; only CONVEYOR_* variables reach the host.
    assert env.restarts() == [
        f"{version} {a.label} {version} unset",
        f"{version} {b.label} {version} unset",
    ]
    # Remote output is streamed with the host in front.
    assert f"{a.label}: installing {version}" in env.lines
    assert f"{b.label}: restarting {version} on {b.label}" in env.lines
    assert instance.release_id == 1
    assert instance.url == "http://127.0.0.1:8080"
    assert instance.state["hosts"] == {
        a.label: {"path": str(path_a), "previous": None, "current": version},
        b.label: {"path": str(path_b), "previous": None, "current": version},
    }
    assert env.target.endpoint(instance) == "http://127.0.0.1:8080"

    status = run(env.target.status(instance))
    assert status.running, status.detail
    assert status.detail == f"{version} on 2 hosts"


@integration
def test_second_deploy_then_rollback_switches_back_and_restarts(
    tmp_path: Path, sshd: SshServers
) -> None:
    a, b, path_a, path_b, hosts = two_hosts(tmp_path, sshd)
    env = Deployment(tmp_path, sshd, hosts)
    first, second = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    one = env.deploy(first)
    two = env.deploy(second, one)
    assert current(path_a) == current(path_b) == f"releases/{second.version}"
    assert two.state["hosts"][a.label]["previous"] == first.version
    # The old release is gone from host b (pruned by hand, say): only b gets it uploaded again.
    shutil.rmtree(path_b / "releases" / first.version)
    env.lines.clear()

    back = run(env.target.rollback(two, first, one))

    assert current(path_a) == current(path_b) == f"releases/{first.version}"
    assert env.restarts()[-2:] == [
        f"{first.version} {a.label} {first.version} unset",
        f"{first.version} {b.label} {first.version} unset",
    ]
    uploads = [line for line in env.lines if f"uploading {first.version} to" in line]
    assert len(uploads) == 1, env.lines
    assert uploads[0].startswith(f"{b.label}: ")
    assert (path_b / "releases" / first.version / "VERSION").exists()
    assert back.release_id == 1
    assert back.state["hosts"][a.label] == {
        "path": str(path_a),
        "previous": second.version,
        "current": first.version,
    }
    assert run(env.target.status(back)).running
    stale = run(env.target.status(two))
    assert not stale.running
    assert f"current is {first.version}" in stale.detail


@integration
def test_unreachable_second_host_switches_the_first_back(tmp_path: Path, sshd: SshServers) -> None:
    a, b, path_a, path_b, hosts = two_hosts(tmp_path, sshd)
    env = Deployment(tmp_path, sshd, hosts)
    first, second = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    one = env.deploy(first)
    b.stop()

    with pytest.raises(TargetError) as failure:
        env.deploy(second, one)

    message = str(failure.value)
    assert message.startswith(f"host {b.label}: connection refused"), message
    assert f"{a.label} is back on {first.version}" in message
    assert current(path_a) == f"releases/{first.version}"
    assert current(path_b) == f"releases/{first.version}"
    # a ran the new release, then was put back on the old one and restarted.
    assert env.restarts()[-2:] == [
        f"{second.version} {a.label} {second.version} unset",
        f"{first.version} {a.label} {first.version} unset",
    ]
    status = run(env.target.status(one))
    assert not status.running
    assert f"host {b.label}: connection refused" in status.detail


@integration
def test_failing_install_on_second_host_reports_its_output_and_undoes_the_first(
    tmp_path: Path, sshd: SshServers
) -> None:
    a, b, path_a, path_b, hosts = two_hosts(tmp_path, sshd)
    install = (
        f'if [ "$CONVEYOR_HOST" = {b.label} ] && [ "$CONVEYOR_RELEASE_ID" = 2 ]; then '
        'echo "pip: no space left on device" >&2; exit 4; fi'
    )
    env = Deployment(tmp_path, sshd, hosts, install=install)
    first, second = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    one = env.deploy(first)

    with pytest.raises(TargetError) as failure:
        env.deploy(second, one)

    message = str(failure.value)
    assert message.startswith(f"host {b.label}: install command exited with status 4"), message
    assert "pip: no space left on device" in message
    assert current(path_a) == current(path_b) == f"releases/{first.version}"
    assert env.restarts()[-1] == f"{first.version} {a.label} {first.version} unset"


@integration
def test_first_deploy_failing_on_an_unused_port_leaves_no_current(
    tmp_path: Path, sshd: SshServers
) -> None:
    a = sshd.start()
    path_a = tmp_path / "host-a" / "app"
    unused = f"127.0.0.1:{free_port()}"
    env = Deployment(tmp_path, sshd, [{"host": a.address, "path": str(path_a)}, unused])

    with pytest.raises(TargetError, match=f"^host {unused}: connection refused"):
        env.deploy(make_bundle(tmp_path, 1))

    assert current(path_a) is None, "no host may serve a release the others do not have"


@integration
def test_unknown_host_key_is_refused(tmp_path: Path, sshd: SshServers) -> None:
    a = sshd.start()
    path_a = tmp_path / "host-a" / "app"
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    env = Deployment(
        tmp_path, sshd, [{"host": a.address, "path": str(path_a)}], known_hosts=str(empty)
    )

    with pytest.raises(TargetError, match=f"^host {a.label}: host key verification failed"):
        env.deploy(make_bundle(tmp_path, 1))

    assert not path_a.exists(), "nothing may be sent to a host whose key is not known"
    assert env.restarts() == []


@integration
def test_values_with_quotes_and_shell_syntax_are_never_executed(
    tmp_path: Path, sshd: SshServers
) -> None:
    a = sshd.start()
    pwned = tmp_path / "pwned"
    # A path, a version (from the SHA) and a variable, each full of shell syntax.
    path = tmp_path / f'it\'s "here"; touch {pwned}-path; x' / f"$(touch {pwned}-sub) `x`" / "a b"
    sha = "'$(id)`" + "0" * 33
    note = f"it's $(touch {pwned}-env); `touch {pwned}-tick`"
    env = Deployment(
        tmp_path,
        sshd,
        [{"host": a.address, "path": str(path)}],
        env={"CONVEYOR_NOTE": note},
        install='printf "%s" "$CONVEYOR_NOTE" > note; printf "%s" "$CONVEYOR_SHA" > sha',
    )
    bundle = make_bundle(tmp_path, 7, sha)
    assert bundle.version == "r7-'$(id)`"

    env.deploy(bundle)

    assert current(path) == f"releases/{bundle.version}"
    release = path / "releases" / bundle.version
    assert (release / "note").read_text() == note
    assert (release / "sha").read_text() == sha
    assert env.restarts() == [f"{bundle.version} {a.label} {bundle.version} unset"]
    assert not list(tmp_path.glob("pwned*")), "interpolated text ran as shell code"


@integration
def test_release_folders_beyond_keep_are_pruned(tmp_path: Path, sshd: SshServers) -> None:
    a = sshd.start()
    path = tmp_path / "host-a" / "app"
    env = Deployment(tmp_path, sshd, [{"host": a.address, "path": str(path)}], keep=1)
    (path / "releases" / "notes").mkdir(parents=True)
    bundles = [make_bundle(tmp_path, n) for n in range(1, 5)]
    previous = None
    for bundle in bundles:
        previous = env.deploy(bundle, previous)

    # keep + 1 releases (the serving one and the one to roll back to); others' folders stay.
    assert releases(path) == sorted([bundles[2].version, bundles[3].version, "notes"])
    assert current(path) == f"releases/{bundles[3].version}"
    assert any(f"removed old releases: {bundles[0].version}" in line for line in env.lines)


@integration
def test_status_command_decides_running(tmp_path: Path, sshd: SshServers) -> None:
    a = sshd.start()
    path = tmp_path / "host-a" / "app"
    env = Deployment(
        tmp_path,
        sshd,
        [{"host": a.address, "path": str(path)}],
        status='test "$(cat VERSION)" = "$CONVEYOR_RELEASE" && test ! -e ../../down',
    )
    instance = env.deploy(make_bundle(tmp_path, 1))
    assert run(env.target.status(instance)).running
    (path / "down").touch()
    status = run(env.target.status(instance))
    assert not status.running
    assert status.detail.startswith(f"host {a.label}: status command exited with status 1")


@integration
def test_deploy_leaves_the_event_loop_free(tmp_path: Path, sshd: SshServers) -> None:
    """Packing and shipping a large release happens while the server keeps serving."""
    a = sshd.start()
    path = tmp_path / "host-a" / "app"
    env = Deployment(tmp_path, sshd, [{"host": a.address, "path": str(path)}])
    bundle = make_bundle(tmp_path, 1)
    (bundle.root / "dist" / "big.bin").write_bytes(os.urandom(24 * 2**20))

    async def deploy_while_ticking() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        try:
            await env.target.deploy(bundle, None)
        finally:
            done.set()
            await ticker
        return max(gaps)

    started = time.monotonic()
    worst = run(deploy_while_ticking())
    took = time.monotonic() - started
    assert (path / "releases" / bundle.version / "dist" / "big.bin").stat().st_size == 24 * 2**20
    assert worst < 0.5, f"the event loop stalled for {worst:.2f} s of a {took:.1f} s deploy"


def test_the_ssh_target_imports_quietly_even_with_every_warning_an_error() -> None:
    """asyncssh's use of cryptography's deprecated DSA is not ours: a user never sees it."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import conveyor.targets.ssh"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
