"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against a real `conveyor
server`, with an admin token so requests reach the handlers: whatever is sent, the answer is
never a 5xx and never carries a traceback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.conftest import GitRepo
from tests.serverproc import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.drill]

# Enough to find the classes of 500 the first runs found (ids past 64 bits, NUL bytes in a
# path) in every operation, and still finish in about 20 s on 2 cores.
EXAMPLES = 20
# Fuzzed text may well contain the word "Traceback" and be echoed back; Python's header may not.
TRACEBACK = "Traceback (most recent call last)"
# Endless by design (the web UI's live stream): it answers 200 and then never ends.
ENDLESS = {"GET /api/v1/stream"}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes | None:
    """`conveyor import` bodies are JSON Lines: send the generated text as it is."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


def _bounded(case: Any) -> Any:
    # A runner's lease request may wait up to 60 s for a job; fuzz it without the wait.
    if isinstance(case.body, dict) and case.operation.path.endswith("/runners/lease"):
        case.body["wait"] = 0
    return case


@pytest.fixture
def server(tmp_path: Path, repo: GitRepo) -> Iterator[ServerProcess]:
    """A server with a service and a queued run, so that some ids name real rows."""
    repo.commit("pipeline", {"conveyor.yml": "service: svc\njobs:\n  build:\n    run: 'true'\n"})
    srv = ServerProcess(tmp_path / "home")
    srv.admin = srv.token("admin", "admin")
    srv.add_service("svc", repo.path)
    srv.start()
    srv.trigger("svc")
    try:
        yield srv
    finally:
        srv.stop()


def test_no_request_from_the_openapi_document_gets_a_5xx_or_a_traceback(
    server: ServerProcess,
) -> None:
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {server.admin}"}
    failures: list[str] = []
    calls = 0

    for operation in operations:
        if operation.label in ENDLESS:
            continue

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy().map(_bounded))
        def fuzz(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=server.url, headers=headers, timeout=15)
            if response.status_code >= 500 or TRACEBACK in response.text:
                curl = case.as_curl_command(headers=headers)
                failures.append(f"{response.status_code} {response.text[:200]!r}\n  {curl}")

        fuzz()

    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20])
    assert server.process is not None
    assert server.process.alive()
    log = server.process.stderr()
    at = log.find(TRACEBACK)
    assert at < 0, "a traceback in the server's log:\n" + log[max(0, at - 300) : at + 3000]
    print(
        f"{calls} requests over {len(operations)} operations in {time.monotonic() - started:.1f}s"
    )
