"""What the CLI says when something is in the way names the CLI's own remedies (CONVEYOR_TOKEN,
`--port`), not HTTP or errno; and says what is going on rather than something that is not
true yet. Real `conveyor` processes, a real server on 127.0.0.1, a real socket in the way."""

from __future__ import annotations

import socket

import pytest
from tests.cli.conftest import run_that_goes_on
from tests.conftest import Conveyor, GitRepo
from tests.serverproc import ServerProcess


@pytest.mark.integration
def test_a_refused_token_is_explained_with_conveyor_token(
    conveyor: Conveyor, server: ServerProcess
) -> None:
    del conveyor.extra_env["CONVEYOR_TOKEN"]
    missing = conveyor("runs")
    assert missing.returncode == 1
    assert f"error: the server at {server.url} needs a token: CONVEYOR_TOKEN is not set" in (
        missing.stderr
    )
    assert "hint: set CONVEYOR_TOKEN to your API token" in missing.stderr
    assert "conveyor token create" in missing.stderr
    assert "Authorization" not in missing.output

    conveyor.extra_env["CONVEYOR_TOKEN"] = "cvy_not-a-token"
    unknown = conveyor("runs")
    assert unknown.returncode == 1
    assert "refused CONVEYOR_TOKEN: unknown or revoked token" in unknown.stderr
    assert "set CONVEYOR_TOKEN to a token the server knows" in unknown.stderr

    conveyor.extra_env["CONVEYOR_TOKEN"] = server.token("reader", "read")
    scope = conveyor("service", "add", "shop", "--repo", "/srv/shop")
    assert scope.returncode == 1
    assert "refused CONVEYOR_TOKEN: this token lacks the admin scope" in scope.stderr
    assert "use a token with that scope as CONVEYOR_TOKEN" in scope.stderr


def test_a_busy_port_says_so_and_names_port(conveyor: Conveyor) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = conveyor("server", "--port", str(port), "--runners", "0", timeout=30)
    assert busy.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in busy.stderr
    assert "--port" in busy.stderr
    assert "Errno" not in busy.output  # (and no traceback: the fixture checks)


@pytest.mark.integration
def test_envs_says_the_first_run_is_still_going(
    conveyor: Conveyor, server: ServerProcess, repo: GitRepo
) -> None:
    run = run_that_goes_on(conveyor, server, repo)
    shown = conveyor("envs", check=True)
    assert shown.stdout.startswith(f"no environments yet: run {run} is still going")
    assert f"conveyor logs -f {run}" in shown.stdout
    assert "add `environments:`" not in shown.stdout


def test_envs_without_runs_says_how_to_declare_them(conveyor: Conveyor) -> None:
    shown = conveyor("envs", check=True)
    assert shown.stdout == "no environments yet: add `environments:` to conveyor.yml\n"
