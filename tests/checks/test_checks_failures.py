"""`failures:` fails a health check fast: after that many failed attempts in a row it stops,
long before its `within:` window ends. Real HTTP servers, real commands, real sockets on
127.0.0.1; windows are long (60 s) so that only `failures` can end these checks early."""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
from pathlib import Path

import pytest

from conveyor.checks.base import Outcome
from conveyor.checks.command import CommandCheck, command_check
from conveyor.checks.health import run_health
from conveyor.checks.http import HttpCheck, http_check
from conveyor.spec import PipelineError, explain_pipeline, parse_pipeline
from conveyor.spec.models import Health
from tests.prometheus import Reply, StubServer, replies

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
LONG = 60


def test_http_fails_after_two_failed_probes_in_a_row() -> None:
    options = HttpCheck.model_validate(
        {"path": "/healthz", "interval": 0.05, "within": LONG, "failures": 2}
    )
    with StubServer(replies(Reply(500, "Internal Server Error"))) as server:
        result = asyncio.run(http_check(options, server.url))
    assert result.outcome is Outcome.FAIL
    assert server.requests == ["/healthz", "/healthz"]
    assert result.data["probes"] == 2
    assert result.data["statuses"] == [500, 500]
    assert result.detail == (
        "GET /healthz → 500 (expected 200); gave up after 2 failures in a row (failures: 2)"
    )


def test_a_passing_probe_starts_the_count_of_failures_again() -> None:
    options = HttpCheck.model_validate(
        {"path": "/", "interval": 0.05, "within": LONG, "failures": 2, "successes": 2}
    )
    sequence = replies(Reply(500), Reply(200), Reply(500), Reply(200), Reply(200))
    with StubServer(sequence) as server:
        result = asyncio.run(http_check(options, server.url))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.data["statuses"] == [500, 200, 500, 200, 200]


def test_without_failures_the_check_keeps_trying_until_it_passes() -> None:
    """Today's behaviour stays the default: failures are no verdict while the window lasts."""
    options = HttpCheck.model_validate({"path": "/", "interval": 0.05, "within": LONG})
    sequence = replies(Reply(500), Reply(500), Reply(500), Reply(500), Reply(200))
    with StubServer(sequence) as server:
        result = asyncio.run(http_check(options, server.url))
    assert result.outcome is Outcome.PASS, result.detail
    assert result.data["probes"] == 5


def test_command_fails_after_the_given_failed_runs(tmp_path: Path) -> None:
    options = CommandCheck.model_validate(
        {"run": "echo run >> runs.txt; echo 'db not ready'; exit 3", "interval": 0.05}
        | {"within": LONG, "failures": 3}
    )
    result = asyncio.run(command_check(options, env=ENV, cwd=tmp_path))
    assert result.outcome is Outcome.FAIL
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["run"] * 3
    assert result.data["runs"] == 3
    assert result.detail == (
        "command exited 3; gave up after 3 failures in a row (failures: 3): db not ready"
    )


def test_tcp_fails_after_the_given_refused_connections(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = int(server.getsockname()[1])  # nothing listens once it is closed
    health = Health.of(
        tcp={"host": "127.0.0.1", "port": port, "within": LONG, "interval": 0.05, "failures": 2}
    )
    [result] = asyncio.run(
        run_health(health, base_url=None, env=ENV, cwd=tmp_path, prometheus_url=None)
    )
    assert result.outcome is Outcome.FAIL
    assert result.data["attempts"] == 2
    assert result.detail == (
        f"127.0.0.1:{port}: connection refused; gave up after 2 failures in a row (failures: 2)"
    )


PIPELINE = """\
service: shop
jobs: {{build: {{run: make}}}}
environments:
  production:
    health:
      http: {{path: /healthz, within: 30s, failures: {failures}}}
"""


def test_failures_is_read_from_the_pipeline_file() -> None:
    pipeline = parse_pipeline(PIPELINE.format(failures=2))
    health = pipeline.environments["production"].health
    assert health is not None
    http = health.configured()["http"]
    assert isinstance(http, HttpCheck)
    assert http.failures == 2
    assert "GET /healthz expects 200 within 30s, failing after 2 failures in a row" in (
        explain_pipeline(pipeline)
    )


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_failures_count_below_one_is_refused_where_written(value: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(PIPELINE.format(failures=value))
    [problem] = info.value.problems
    assert (problem.line, problem.path) == (6, "environments.production.health.http.failures")
    expected = "must be at least 1" if value != "many" else "expected an integer"
    assert problem.message.startswith(expected), textwrap.shorten(str(problem), 200)
