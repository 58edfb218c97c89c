"""The tcp check, against real listening and closed sockets on 127.0.0.1; written in
`conveyor.yml` and run by run_health like every other check."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.checks.health import run_health
from conveyor.spec import PipelineError, parse_pipeline
from conveyor.spec.models import Health

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])  # nothing listens once it is closed


def run(health: Health, tmp_path: Path, base_url: str | None = None) -> list[tuple[str, str]]:
    results = asyncio.run(
        run_health(health, base_url=base_url, env=ENV, cwd=tmp_path, prometheus_url=None)
    )
    return [(r.kind, f"{r.outcome.value}: {r.detail}") for r in results]


def pipeline(tcp: str) -> str:
    return f"""
service: db
jobs: {{build: {{run: make}}}}
environments:
  production:
    health:
      tcp: {tcp}
"""


def test_a_listening_port_passes(listening: int, tmp_path: Path) -> None:
    health = Health.of(
        tcp={"host": "127.0.0.1", "port": listening, "successes": 2, "interval": 0.01}
    )
    [(kind, verdict)] = run(health, tmp_path)
    assert kind == "tcp"
    assert (
        verdict == f"pass: 127.0.0.1:{listening} accepts connections, 2/2 consecutive connections"
    )


def test_a_closed_port_fails_naming_the_refusal(tmp_path: Path) -> None:
    port = closed_port()
    health = Health.of(tcp={"host": "127.0.0.1", "port": port, "within": 0.3, "interval": 0.05})
    [(_, verdict)] = run(health, tmp_path)
    assert verdict.startswith(f"fail: 127.0.0.1:{port}: connection refused; 0/1 consecutive")


def test_host_and_port_default_to_the_deployment_url(listening: int, tmp_path: Path) -> None:
    [(_, verdict)] = run(Health.of(tcp={}), tmp_path, base_url=f"http://127.0.0.1:{listening}")
    assert verdict.startswith("pass: 127.0.0.1:")
    [(_, verdict)] = run(Health.of(tcp={}), tmp_path, base_url=None)
    assert verdict == "inconclusive: no host and port to connect to: give host and port"


def test_written_in_the_pipeline_file_and_validated_where_written(listening: int) -> None:
    parsed = parse_pipeline(pipeline(f"{{host: 127.0.0.1, port: {listening}}}"))
    health = parsed.environments["production"].health
    assert health is not None
    assert list(health.configured()) == ["tcp"]

    with pytest.raises(PipelineError) as caught:
        parse_pipeline(pipeline("{port: 70000, hots: x}"))
    assert [str(p) for p in caught.value.problems] == [
        "conveyor.yml:7:19: environments.production.health.tcp.port: must be at most 65535, "
        "got 70000",
        "conveyor.yml:7:26: environments.production.health.tcp: unknown key 'hots' "
        "— did you mean 'host'?",
    ]
