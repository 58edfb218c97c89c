"""Drills with a real `conveyor server` (issue 13): a release that dies after its checks is
restarted, or, when it keeps dying in production, rolled back with an incident; kill -9 during
a rollback's or a production deployment's checks and it completes once the server is back
(a deployment during which the server dies every time ends after three resumptions)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitRepo
from tests.delivery.harness import APP, stop_released_processes
from tests.delivery.test_delivery_drill import answer, deployments, environment, release_pids
from tests.serverproc import UNSANDBOXED, ServerProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

# APP, and it exits 1.5 s after it started (DIES=always), or only the first time it runs
# (DIES=once: $MARKER records that it did).
DYING = APP.replace(
    "class Handler",
    "DIES = pathlib.Path('DIES').read_text().strip()\n"
    "if DIES == 'always' or (DIES == 'once' and not os.path.exists(os.environ['MARKER'])):\n"
    "    pathlib.Path(os.environ['MARKER']).touch()\n"
    "    threading.Timer(1.5, lambda: os._exit(3)).start()\n\n\n"
    "class Handler",
)


def service(
    repo: GitRepo,
    version: str,
    marker: Path,
    *,
    tier: str = "staging",
    dies: str = "never",
    healthy: bool = True,
    successes: int = 1,
) -> None:
    repo.commit(
        version,
        {
            "app.py": DYING,
            "VERSION": version,
            "HEALTHY": "yes" if healthy else "no",
            "DIES": dies,
            "conveyor.yml": f"""\
service: shop
jobs:
  test:
    run: "true"
environments:
  {tier}:
    tier: {tier}
    deploy: {{ target: process, start: python3 app.py }}
    health: {{ http: {{ path: /healthz, within: 10s, interval: 100ms, successes: {successes} }} }}
    monitor: {{ interval: 500ms, failures: 3 }}
    env: {{ MARKER: {marker} }}
""",
        },
    )


@pytest.fixture
def server(tmp_path: Path, repo: GitRepo) -> Any:
    srv = ServerProcess(tmp_path / "server-home", runners=1)
    srv.admin = srv.token("admin", "admin")
    srv.add_service("shop", repo.path)
    srv.env.update(UNSANDBOXED)  # the release writes its marker outside its folder
    yield srv
    srv.stop()
    stop_released_processes(srv.home)


def incidents(server: ServerProcess) -> list[dict[str, Any]]:
    return list(server.api("GET", "/incidents", params={"service": "shop"}).json())


def test_a_release_that_dies_after_its_checks_is_restarted(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    service(repo, "v1", tmp_path / "died", dies="once")
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("healthy") and environment(server), 30, "v1")
    [first] = release_pids(server.home)
    until((tmp_path / "died").exists, 5, "v1 to have started once")
    # It exits 1.5 s after it started; the monitor notices and starts it again.
    until(lambda: release_pids(server.home) not in ([], [first]), 15, "v1 restarted")
    until(lambda: answer(env["url"]) == "v1", 10, "v1 answering again")
    now = until(lambda: (e := environment(server)).get("healthy") and e, 10, "healthy again")
    assert now["checked_at"] is not None
    assert [d["kind"] for d in deployments(server)] == ["deploy"]  # no rollback
    assert incidents(server) == []


def test_a_release_that_keeps_dying_in_production_is_rolled_back_with_an_incident(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    service(repo, "v1", tmp_path / "m1", tier="production")
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("verified_release") == 1 and environment(server))
    service(repo, "v2", tmp_path / "m2", tier="production", dies="always")
    server.trigger("shop")
    until(lambda: environment(server).get("release") == 2, 30, "v2 serving")

    def rolled_back() -> bool:
        return any(
            d["kind"] == "rollback" and d["status"] == "succeeded" for d in deployments(server)
        )

    until(rolled_back, 30, "a rollback to v1")
    until(lambda: answer(env["url"]) == "v1", 10, "v1 serving")
    assert environment(server)["release"] == 1
    [incident] = incidents(server)
    assert incident["status"] == "resolved"
    assert "r2" in incident["title"]
    assert "unhealthy" in incident["title"]


def test_kill_9_during_a_rollback_completes_the_rollback_after_restart(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    # v1's checks take about 3 s (30 probes 100 ms apart): the window to kill the server in
    # while the rollback to v1 checks it.
    service(repo, "v1", tmp_path / "m1", tier="production", successes=30)
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("verified_release") == 1 and environment(server))
    service(repo, "v2", tmp_path / "m2", tier="production", healthy=False)
    server.trigger("shop")

    def rollback_checking() -> bool:
        return any(
            d["kind"] == "rollback" and d["status"] == "checking" for d in deployments(server)
        )

    until(rollback_checking, 40, "the rollback's checks")
    server.kill9()
    server.start()

    def settled() -> bool:
        return all(
            d["status"] in {"succeeded", "failed", "rolled_back"} for d in deployments(server)
        )

    until(settled, 40, "every deployment to end")
    kinds = {(d["kind"], d["release"]): d for d in deployments(server)}
    assert kinds[("rollback", 1)]["status"] == "succeeded"
    assert kinds[("deploy", 2)]["status"] == "rolled_back"
    now = environment(server)
    assert now["release"] == 1
    assert now["healthy"] is not False
    assert not now["held"]
    until(lambda: answer(env["url"]) == "v1", 20, "v1 serving")
    assert len(release_pids(server.home)) == 1
    assert [i["status"] for i in incidents(server)] == ["resolved"]


def _checking(server: ServerProcess, release: int, attempt: int) -> bool:
    """Release ``release``'s deployment runs its checks (in resumption ``attempt``, 0: the
    first time)."""
    return any(
        d["release"] == release
        and d["status"] == "checking"
        and (attempt == 0 or f"resumption {attempt} of" in (d["reason"] or ""))
        for d in deployments(server)
    )


def test_kill_9_during_a_production_deployment_completes_it_after_restart(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    service(repo, "v1", tmp_path / "m1", tier="production")
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("verified_release") == 1 and environment(server))
    # v2's checks take about 3 s (30 probes 100 ms apart): the window to kill the server in.
    service(repo, "v2", tmp_path / "m2", tier="production", successes=30)
    server.trigger("shop")
    until(lambda: _checking(server, 2, 0), 40, "release 2's checks")
    server.kill9()
    server.start()
    until(lambda: environment(server).get("verified_release") == 2, 40, "release 2 verified")
    until(lambda: answer(env["url"]) == "v2", 20, "v2 serving")
    [_first, second] = deployments(server)  # the same deployment, carried out again
    assert (second["release"], second["kind"], second["status"]) == (2, "deploy", "succeeded")
    assert "resumption 1 of 3" in second["reason"]
    assert environment(server)["healthy"] is True
    assert len(release_pids(server.home)) == 1
    assert incidents(server) == []  # the server died, not the release


def test_a_deployment_during_which_the_server_always_dies_ends_after_three_resumptions(
    server: ServerProcess, repo: GitRepo, tmp_path: Path
) -> None:
    service(repo, "v1", tmp_path / "m1", tier="production")
    server.start()
    server.trigger("shop")
    env = until(lambda: environment(server).get("verified_release") == 1 and environment(server))
    service(repo, "v2", tmp_path / "m2", tier="production", successes=30)
    server.trigger("shop")
    for attempt in range(4):
        until(functools.partial(_checking, server, 2, attempt), 40, f"checks ({attempt})")
        server.kill9()
        server.start()

    def settled() -> bool:
        return all(
            d["status"] in {"succeeded", "failed", "rolled_back"} for d in deployments(server)
        )

    until(settled, 40, "every deployment to end")
    kinds = {(d["kind"], d["release"]): d for d in deployments(server)}
    assert len(kinds) == len(deployments(server)) == 3  # v1, v2 (never a second), the rollback
    failed = kinds[("deploy", 2)]
    assert failed["status"] == "rolled_back"  # it had replaced v1 in place: the policy applies
    assert "interrupted: the server stopped during the deployment 4 times" in failed["reason"]
    assert kinds[("rollback", 1)]["status"] == "succeeded"
    until(lambda: answer(env["url"]) == "v1", 20, "v1 serving")
    assert environment(server)["release"] == 1
