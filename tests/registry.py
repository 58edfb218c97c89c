"""A real OCI registry for tests: `docker-registry serve` (distribution 2.8) on 127.0.0.1.

Each registry has its own configuration and storage under pytest's tmp folder, listens on a
free port of 127.0.0.1 only, is ready once `GET /v2/` answers 200 and is stopped by its PID.
Debian's packaged configuration (all interfaces, htpasswd) is never used.

Import the fixtures into a test module
(`from tests.registry import registry_session, readonly_registry_session  # noqa: F401`) and ask
for `registry` (accepts pushes) or `readonly_registry` (distribution's maintenance read-only
mode: reads work, every push is refused with 405). Without `docker-registry` the fixtures skip,
except in CI (CI=true), where they fail: CI must install PACKAGES.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.serverproc import free_port

# What CI installs (apt-get install -y --no-install-recommends ...); skopeo copies images into
# the registry in tests.
PACKAGES = "docker-registry skopeo"
BINARY = "docker-registry"
START_SECONDS = 20.0
# Ports come from free_port(), which another process may take before the registry binds it.
START_ATTEMPTS = 3

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
  secret: conveyor-tests-only
"""

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:<port>`` (what image references start with)."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    read_only: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")

    def manifest(self, name: str, reference: str) -> httpx.Response:
        """GET a manifest by tag or digest, accepting every manifest and index type."""
        return httpx.get(
            f"{self.url}/v2/{name}/manifests/{reference}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=10,
        )

    def digest(self, name: str, reference: str) -> str:
        """The registry's own Docker-Content-Digest for a manifest (HEAD)."""
        response = httpx.head(
            f"{self.url}/v2/{name}/manifests/{reference}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=10,
        )
        assert response.status_code == 200, f"{name}:{reference}: {response.status_code}"
        return response.headers["Docker-Content-Digest"]

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited within 10 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def _unavailable(reason: str) -> NoReturn:
    message = f"{reason}: install it with apt-get install -y --no-install-recommends {PACKAGES}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (in CI the registry tests must run, never skip)", pytrace=False)
    pytest.skip(message)


def _binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        _unavailable(f"{BINARY} (distribution) is not installed")
    return found


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_registry(root: Path, *, read_only: bool = False) -> Registry:
    """Start a registry with storage under ``root``; return once it answers (bounded wait)."""
    binary = _binary()
    root.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        config = root / "registry.yml"
        config.write_text(
            CONFIG.format(storage=root / "storage", readonly=str(read_only).lower(), port=port)
        )
        with (root / "registry.log").open("ab") as log:
            process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=root,
            )
        registry = Registry(f"127.0.0.1:{port}", root, process, read_only)
        deadline = time.monotonic() + START_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _ready(registry.url):
                return registry
            time.sleep(0.05)
        registry.stop()
        failures.append(f"port {port}: exit {process.returncode}")
    raise AssertionError(
        f"docker-registry did not answer on /v2/ within {START_SECONDS:g}s "
        f"({'; '.join(failures)}):\n{(root / 'registry.log').read_text(errors='replace')}"
    )


@contextlib.contextmanager
def running_registry(root: Path, *, read_only: bool = False) -> Iterator[Registry]:
    registry = start_registry(root, read_only=read_only)
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session", name="registry")
def registry_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that accepts pushes, for the whole session (plain HTTP, no auth)."""
    _binary()
    root = tmp_path_factory.mktemp("registry")
    with running_registry(root) as registry:
        yield registry
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", name="readonly_registry")
def readonly_registry_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry in distribution's read-only maintenance mode: every push answers 405."""
    _binary()
    root = tmp_path_factory.mktemp("registry-readonly")
    with running_registry(root, read_only=True) as registry:
        yield registry
    shutil.rmtree(root, ignore_errors=True)
