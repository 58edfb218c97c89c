"""Browser tests: the machine's Chromium, driven by Playwright, against a real `conveyor server`.

Fixtures and helpers (stable names; page modules' tests use them):

- ``browser`` (module): Playwright's Chromium from /usr/lib/chromium/chromium (never
  `playwright install`), headless, with the flags the project uses everywhere. Per module, not
  per session: Playwright's sync API keeps an event loop running in the main thread while it
  is started, and the in-process server tests (asyncio.run) must not run beside it, whatever
  order pytest is given the files in.
- ``web`` (function): a started `conveyor server` on a free 127.0.0.1 port with its own
  CONVEYOR_HOME and two built-in runner slots (see :class:`Web`):
  ``web.url``, ``web.home``, ``web.env``, ``web.admin_token``, ``web.api`` (an httpx.Client on
  ``{url}/api/v1`` with the admin token), ``web.cli(*args, input=None, check=True)`` (runs
  ``python -m conveyor ...`` against the same home; returns CompletedProcess),
  ``web.token(name, scopes, user=None)`` (creates a token with the CLI, returns it; scopes a
  string "read,approve" or a list), ``web.user(name, password, scopes, groups=())`` (a user who
  can sign in with a password), ``web.service(name, files)`` (a git repository with these files
  committed, registered as a service; returns the GitRepo), ``web.trigger(service)`` and
  ``web.wait_run(run_id)`` (through the API), ``web.wait_approval(release)`` (its pending
  approval), ``web.wait_serving(service, environment, release)`` (healthy, nothing queued),
  ``web.open_incident(service, title, environment)``, ``web.stop()``. The server is stopped by
  its PID at teardown, and processes that deployments started under the home are killed.
- ``page`` (function): a fresh browser context (1280×800) and page, 10 s default timeout. An
  uncaught JavaScript exception on the page fails the test at teardown; on a failed test a
  screenshot `<test>-failure.png` is saved.
- ``signed_in(page, web, token=None, *, user=None, password=None, next="/")``: signs the page
  in through the real sign-in form (token tab, or user-and-password tab) and waits until it
  has left /signin.
- ``shot(page, name)``: a full-page screenshot to test-results/screenshots/<test>-<name>.png.
- ``APP`` and ``HEALTH`` (re-exported from tests.delivery.harness): a tiny service that answers
  its VERSION and /healthz, and the health-check block for conveyor.yml.
- ``SHOP_CHAIN`` and ``shop_files(version)``: service `shop`, jobs build (a line in green) then
  test, deployed to staging and then, once one of group `ops` approves, to production.

Mark browser tests ``@pytest.mark.browser`` (they also start a server process: add
``@pytest.mark.integration`` too).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.serverproc import TERMINAL, ServerProcess, conveyor_argv, until

__all__ = ["APP", "HEALTH", "SHOP_CHAIN", "Web", "shop_files", "shot", "signed_in"]

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-results" / "screenshots"
TIMEOUT_MS = 10_000
SHOP_CHAIN = f"""\
service: shop
jobs:
  build:
    run: "printf '\\\\033[32mbuilt\\\\033[0m the shop\\\\n'"
  test:
    needs: [build]
    run: "echo testing the shop"
environments:
  staging:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
  production:
    after: staging
    approval: {{ approvers: [ops], required: 1 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""


def shop_files(version: str) -> dict[str, str]:
    """The files of service `shop` (SHOP_CHAIN) whose app answers `version`."""
    return {"app.py": APP, "VERSION": version, "HEALTHY": "yes", "conveyor.yml": SHOP_CHAIN}


class Web:
    """A real `conveyor server` process for a browser to talk to."""

    def __init__(self, tmp_path: Path, runners: int = 2) -> None:
        self.tmp_path = tmp_path
        # The pages' steps wait on FIFOs in the test's folder, which a sandboxed step cannot
        # see: the UI is what is tested here, tests/security tests the sandbox.
        self.server = ServerProcess(tmp_path / "home", runners=runners, sandbox=False)
        self.home: Path = self.server.home
        self.url: str = self.server.url
        self.env: dict[str, str] = self.server.env
        self.admin_token = self.token("admin", "admin", user="root")
        self.server.admin = self.admin_token
        self.server.start()
        self.api = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=15,
        )

    # --- the CLI -------------------------------------------------------------------------------

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`python -m conveyor ARGS` on this server's home (embedded, not through HTTP)."""
        out = subprocess.run(
            conveyor_argv(*args),
            env=self.env,
            cwd=self.tmp_path,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert out.returncode == 0, f"conveyor {' '.join(args)}:\n{out.stdout}{out.stderr}"
        return out

    def token(self, name: str, scopes: str | Sequence[str], user: str | None = None) -> str:
        scope = scopes if isinstance(scopes, str) else ",".join(scopes)
        args = ["token", "create", name]
        for s in scope.split(","):
            args += ["--scope", s.strip()]
        if user:
            args += ["--user", user]
        return self.cli(*args).stdout.strip().splitlines()[0]

    def user(
        self,
        name: str,
        password: str,
        scopes: str | Sequence[str] = "read",
        groups: Sequence[str] = (),
    ) -> None:
        """A user who can sign in with `password` and holds `scopes` in the UI."""
        scope = scopes if isinstance(scopes, str) else ",".join(scopes)
        args = ["user", "add", name, "--password", "--scope", scope]
        for group in groups:
            args += ["--group", group]
        self.cli(*args, input=f"{password}\n{password}\n")

    # --- services and runs ---------------------------------------------------------------------

    def service(self, name: str, files: dict[str, str], message: str = "first") -> GitRepo:
        """A git repository with `files` committed, registered as service `name`."""
        path = self.tmp_path / "repos" / name
        path.mkdir(parents=True)
        repo = GitRepo(path)
        repo.git("init", "-q", "-b", "main")
        repo.commit(message, files)
        self.cli("service", "add", name, "--repo", str(path))
        return repo

    def trigger(self, service: str, rev: str = "HEAD") -> dict[str, Any]:
        r = self.api.post("/runs", json={"service": service, "rev": rev})
        assert r.status_code == 201, r.text
        run: dict[str, Any] = r.json()
        return run

    def wait_run(self, run_id: int, timeout: float = 30.0) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            run: dict[str, Any] = self.api.get(f"/runs/{run_id}").json()
            return run if run["status"] in TERMINAL else None

        found: dict[str, Any] = until(ended, timeout, f"run {run_id} to end")
        return found

    # --- delivery ------------------------------------------------------------------------------

    def wait_approval(self, release: int, timeout: float = 30.0) -> dict[str, Any]:
        """The pending approval of `release`, once the release waits for one."""

        def waiting() -> dict[str, Any] | None:
            approvals: list[dict[str, Any]] = self.api.get("/approvals").json()
            return next((a for a in approvals if a["release"] == release), None)

        found: dict[str, Any] = until(waiting, timeout, f"release {release} to await approval")
        return found

    def wait_serving(
        self, service: str, environment: str, release: int, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The environment, once `release` serves there, healthy, with nothing queued."""

        def serving() -> dict[str, Any] | None:
            envs: list[dict[str, Any]] = self.api.get(
                "/environments", params={"service": service}
            ).json()
            env = next(e for e in envs if e["environment"] == environment)
            ready = env["release"] == release and env["healthy"] and not env["queue"]
            return env if ready else None

        found: dict[str, Any] = until(
            serving, timeout, f"{service} {environment} to serve release {release}"
        )
        return found

    def open_incident(self, service: str, title: str, environment: str) -> dict[str, Any]:
        r = self.api.post(
            "/incidents", json={"service": service, "title": title, "environment": environment}
        )
        assert r.status_code == 201, r.text
        incident: dict[str, Any] = r.json()
        return incident

    # --- the process ---------------------------------------------------------------------------

    def stop(self) -> None:
        self.api.close()
        self.server.stop()

    def close(self) -> None:
        try:
            if self.server.process is not None and self.server.process.alive():
                self.server.stop()
            else:
                self.server.http.close()
            self.api.close()
        finally:
            stop_released_processes(self.home)

    def logs(self) -> str:
        """The server's stderr so far (for a failing assertion's message)."""
        process = self.server.process
        return process.stderr() if process is not None else ""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if sys.version_info < (3, 12):
        # An in-process server test (earlier in the session) leaves its pidfd child watcher
        # attached to a loop that is closed now; Playwright starts its driver through
        # asyncio's child watcher, so give it a working one.
        asyncio.set_child_watcher(asyncio.ThreadedChildWatcher())
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path)
    try:
        yield w
    finally:
        w.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(f"{exc.name}: {exc.message}\n{exc.stack}"))
    try:
        yield p
        if request.node.stash.get(_FAILED, False):
            shot(p, "failure")
    finally:
        context.close()
    assert not errors, "uncaught JavaScript errors on the page:\n" + "\n".join(errors)


def _test_name() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0]
    name = current.rsplit("::", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as test-results/screenshots/<test-name>-<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{_test_name()}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def signed_in(
    page: Page,
    web: Web,
    token: str | None = None,
    *,
    user: str | None = None,
    password: str | None = None,
    next: str = "/",
) -> Page:
    """Sign `page` in through the sign-in form, then wait until it has left /signin."""
    page.goto(f"{web.url}/signin?next={quote(next, safe='')}")
    if token is not None:
        page.get_by_role("tab", name="Token").click()
        page.get_by_label("API token").fill(token)
    else:
        if user is None or password is None:
            raise ValueError("give a token, or a user and a password")
        page.get_by_role("tab", name="User and password").click()
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/signin"))
    return page
