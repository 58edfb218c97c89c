"""A real Prometheus for tests, scraping a metrics exporter whose values the test sets.

Prometheus runs as docs/machine.md ("Prometheus and Alertmanager") describes: its own
configuration and storage under pytest's tmp folder, 127.0.0.1 and a free port, scraping every
second. It is started once per session (a new scrape target takes about 5 s to show data) and
stopped by its PID. Tests share it, so each test uses metric names of its own.

Import the fixture into a test module (`from tests.prometheus import prometheus_session  # noqa:
F401`) and ask for `prometheus`. Without the binary the fixture skips, except in CI (CI=true),
where it fails naming the apt package to install.

The building blocks are separate so that Alertmanager can be added the same way: `Daemon` starts
any such server and waits for `/-/ready`, and `start_prometheus` takes rule files and an
Alertmanager address. `StubServer` is also the endpoint the HTTP check tests probe.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.serverproc import free_port, until

# What CI installs (apt-get install -y --no-install-recommends ...) for each binary.
PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}
READY_SECONDS = 30.0
# The first scrape of a new target comes about 5 s after Prometheus starts.
DATA_SECONDS = 30.0

PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
{rules}{alerting}scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ["{exporter}"]
"""


def _unavailable(binary: str) -> NoReturn:
    package = PACKAGES[binary]
    message = (
        f"{binary} is not installed: install it with "
        f"apt-get install -y --no-install-recommends {package}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (in CI these tests must run, never skip)", pytrace=False)
    pytest.skip(message)


def find_binary(binary: str) -> str:
    """The binary's path, or skip (fail in CI) naming its package."""
    path = shutil.which(binary)
    if path is None:
        _unavailable(binary)
    return path


# --- an HTTP server whose answers the test decides --------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer: ``delay`` seconds late, or never (``hang``) until the server closes."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    delay: float = 0.0
    hang: bool = False


def replies(*sequence: Reply) -> Callable[[str], Reply]:
    """A handler answering with ``sequence`` in order, then repeating its last reply."""
    lock = threading.Lock()
    given = 0

    def handler(path: str) -> Reply:
        nonlocal given
        with lock:
            reply = sequence[min(given, len(sequence) - 1)]
            given += 1
        return reply

    return handler


class StubServer:
    """A threaded HTTP server on 127.0.0.1:<free port> answering every GET with
    ``handler(path)``. ``requests`` lists the paths asked for; ``seen`` is set on the first."""

    def __init__(self, handler: Callable[[str], Reply]) -> None:
        self.handler = handler
        self.requests: list[str] = []
        self.seen = threading.Event()
        self._closing = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.requests.append(self.path)
                stub.seen.set()
                reply = stub.handler(self.path)
                if reply.hang:
                    stub._closing.wait(60)
                    self.close_connection = True
                    return
                if reply.delay:
                    stub._closing.wait(reply.delay)
                body = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True  # the client gave up: nothing to tell it

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-answer is what some tests do on purpose

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._closing.set()  # frees handlers that hang or delay
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the metrics exporter Prometheus scrapes ---------------------------------------------------


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exporter:
    """Serves /metrics in the Prometheus text format with the values the test sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.server = StubServer(self._reply)
        self.address = self.server.address

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name, tuple(sorted(labels.items()))] = value

    def remove(self, name: str, **labels: str) -> None:
        """Stop exporting the series; Prometheus marks it stale at its next scrape."""
        with self._lock:
            self._values.pop((name, tuple(sorted(labels.items()))), None)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines = []
        for (name, labels), value in items:
            inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            series = f"{name}{{{inner}}}" if inner else name
            lines.append(f"{series} {_format_value(value)}")
        return "\n".join(lines) + "\n"

    def _reply(self, path: str) -> Reply:
        if path.partition("?")[0] != "/metrics":
            return Reply(404, "not found\n")
        return Reply(200, self.render(), "text/plain; version=0.0.4; charset=utf-8")

    def close(self) -> None:
        self.server.close()


# --- server processes: Prometheus now, Alertmanager later -------------------------------------


class Daemon:
    """A server binary (Prometheus, Alertmanager) in its own process, output in a log file,
    waited on until ``ready_url`` answers 200, stopped by its PID."""

    def __init__(self, argv: list[str], log: Path, ready_url: str) -> None:
        self.name = Path(argv[0]).name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.proc.pid
        try:
            self._wait_ready(ready_url)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} was not ready within {READY_SECONDS:g}s:\n{self.output()}"
                )
            time.sleep(0.05)

    def output(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited within 15 s."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Prometheus:
    """The session's Prometheus (``url``), scraping ``exporter`` every second."""

    url: str
    exporter: Exporter
    daemon: Daemon

    def query(self, expr: str) -> dict[str, Any]:
        """The ``data`` of an instant query (resultType and result)."""
        return instant_query(self.url, expr)

    def wait_series(self, expr: str, count: int, timeout: float = DATA_SECONDS) -> list[Any]:
        """Wait (bounded) until ``expr`` returns ``count`` (at least 1) series; their
        [time, value] pairs."""

        def values() -> list[Any]:
            result = self.query(expr)["result"]
            return [s["value"] for s in result] if len(result) == count else []

        found: list[Any] = until(values, timeout, f"{count} series of {expr}")
        return found

    def wait_value(self, expr: str, value: float, timeout: float = DATA_SECONDS) -> None:
        """Wait (bounded) until ``expr`` is the single series ``value`` (so it was scraped)."""
        want = _format_value(value) if math.isnan(value) else value

        def scraped() -> bool:
            result = self.query(expr)["result"]
            if len(result) != 1:
                return False
            got = result[0]["value"][1]
            return bool(got == want) if isinstance(want, str) else float(got) == want

        until(scraped, timeout, f"{expr} == {value}")


def start_prometheus(
    root: Path, exporter: Exporter, *, rules: str | None = None, alertmanager: str | None = None
) -> Prometheus:
    """Prometheus on a free port with its configuration and storage under ``root``; ``rules``
    (the text of a rules file) and ``alertmanager`` (host:port) are for alerting tests."""
    url, daemon = start_scraping(root, exporter.address, rules=rules, alertmanager=alertmanager)
    return Prometheus(url=url, exporter=exporter, daemon=daemon)


def start_scraping(
    root: Path, target: str, *, rules: str | None = None, alertmanager: str | None = None
) -> tuple[str, Daemon]:
    """Prometheus scraping ``target`` (host:port, its /metrics) every second: its URL and its
    process, configuration and storage under ``root``."""
    binary = find_binary("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    rules_part = ""
    if rules is not None:
        (root / "rules.yml").write_text(rules)
        rules_part = f"rule_files: [{json.dumps(str(root / 'rules.yml'))}]\n"
    alerting = ""
    if alertmanager is not None:
        alerting = (
            f'alerting: {{ alertmanagers: [ {{ static_configs: [ {{ targets: ["{alertmanager}"]'
            " } ] } ] }\n"
        )
    config = root / "prometheus.yml"
    config.write_text(PROMETHEUS_YML.format(rules=rules_part, alerting=alerting, exporter=target))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = Daemon(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        root / "prometheus.log",
        f"{url}/-/ready",
    )
    return url, daemon


def instant_query(url: str, expr: str) -> dict[str, Any]:
    """The ``data`` of an instant query (resultType and result) to the Prometheus at ``url``."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


@pytest.fixture(scope="session", name="prometheus")
def prometheus_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping an exporter the tests set values on, for the whole session."""
    find_binary("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    exporter = Exporter()
    try:
        prometheus = start_prometheus(root, exporter)
        try:
            yield prometheus
        finally:
            prometheus.daemon.stop()
    finally:
        exporter.close()
        shutil.rmtree(root, ignore_errors=True)
