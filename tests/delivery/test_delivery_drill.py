"""Drills with a real `conveyor server`: a restart re-adopts the release that serves (or starts
it again), and kill -9 of the server in the middle of a blue-green deployment does not fail it:
once the server is back the deployment is carried out again and ends with exactly one release
(the new one) serving."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GitRepo
from tests.delivery.harness import APP, stop_released_processes
from tests.serverproc import UNSANDBOXED, ServerProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]


def service(repo: GitRepo, version: str, *, gate: Path | None = None) -> None:
    """Commit ``version``; with ``gate``, its verification waits until that file exists, and
    its health check needs 10 passing probes 100 ms apart (a window to kill the server in)."""
    verify = (
        f"    verify:\n      - run: while [ ! -e {gate} ]; do sleep 0.02; done\n" if gate else ""
    )
    repo.commit(
        version,
        {
            "app.py": APP,
            "VERSION": version,
            "HEALTHY": "yes",
            "conveyor.yml": f"""\
service: shop
jobs:
  test:
    run: "true"
environments:
  staging:
    deploy: {{ target: process, start: python3 app.py, strategy: blue-green }}
    health: {{ http: {{ path: /healthz, within: 10s, interval: 100ms, successes: 10 }} }}
{verify}""",
        },
    )


def environment(server: ServerProcess) -> dict[str, Any]:
    """Staging as the API shows it ({} until the first release names it)."""
    found = server.api("GET", "/environments", params={"service": "shop"}).json()
    return dict(found[0]) if found else {}


def deployments(server: ServerProcess) -> list[dict[str, Any]]:
    found = server.api("GET", "/deployments", params={"service": "shop"}).json()
    return list(reversed(found))


def answer(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def release_pids(home: Path) -> list[int]:
    """Live releases of this server: the leaders of the process groups running in a release
    folder (a sandboxed release is bubblewrap, leading the release's processes)."""
    releases = str(home / "releases")
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                pid = int(entry.name)
                if os.getpgid(pid) != pid:
                    continue
                if os.readlink(f"/proc/{entry.name}/cwd").startswith(releases):
                    with open(f"/proc/{entry.name}/stat", encoding="ascii") as fh:
                        if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def server(tmp_path: Path, repo: GitRepo) -> Any:
    srv = ServerProcess(tmp_path / "server-home", runners=1)
    srv.admin = srv.token("admin", "admin")
    srv.add_service("shop", repo.path)
    yield srv
    srv.stop()
    stop_released_processes(srv.home)


def test_a_restarted_server_re_adopts_the_serving_release_or_starts_it_again(
    server: ServerProcess, repo: GitRepo
) -> None:
    service(repo, "v1")
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("healthy") and environment(server), 30, "staging")
    url = env["url"]
    assert answer(url) == "v1"
    [pid] = release_pids(server.home)

    server.process.stop()  # type: ignore[union-attr]
    assert answer(url) == "v1"  # the edge holds the stable port, not the server
    server.start()
    until(lambda: answer(url) == "v1", 20, "v1 serving again after the restart")
    assert release_pids(server.home) == [pid]  # adopted, not restarted

    server.process.stop()  # type: ignore[union-attr]
    os.killpg(pid, 9)
    until(lambda: not release_pids(server.home), 10, "the release to die")
    server.start()
    until(lambda: answer(url) == "v1", 20, "v1 started again after the restart")
    assert len(release_pids(server.home)) == 1
    assert release_pids(server.home) != [pid]


@pytest.mark.parametrize("phase", ["checking", "verifying"])
def test_kill_9_during_a_blue_green_deployment_resumes_it_after_restart(
    server: ServerProcess, repo: GitRepo, tmp_path: Path, phase: str
) -> None:
    gate = tmp_path / "gate"
    service(repo, "v1", gate=gate)
    gate.touch()
    server.env.update(UNSANDBOXED)  # verification waits for the gate, outside any release
    server.start()
    server.trigger("shop")
    until(lambda: environment(server).get("verified_release") == 1, 30, "v1 verified")
    url = environment(server)["url"]
    gate.unlink()

    service(repo, "v2", gate=gate)
    server.trigger("shop")
    until(
        lambda: any(d["release"] == 2 and d["status"] == phase for d in deployments(server)),
        30,
        f"release 2 {phase}",
    )
    server.kill9()
    gate.touch()
    server.start()

    def settled() -> bool:
        return all(
            d["status"] in {"succeeded", "failed", "rolled_back"} for d in deployments(server)
        )

    until(settled, 30, "every deployment to end")
    [_first, second] = deployments(server)  # no second deployment of release 2, no rollback
    assert (second["release"], second["kind"], second["status"]) == (2, "deploy", "succeeded")
    assert f"stopped while it was {phase}" in second["reason"]
    assert "resumption 1 of 3" in second["reason"]
    env = environment(server)
    assert env["release"] == 2
    assert env["healthy"] is True
    until(lambda: answer(url) == "v2", 20, "v2 serving")
    assert len(release_pids(server.home)) == 1
