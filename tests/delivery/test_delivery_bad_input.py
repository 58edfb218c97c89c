"""Bad input and failure during delivery: each ends in a clear state and message, never a
half-switched environment; a failing notifier never blocks or fails a deployment."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sqlalchemy import select

from conveyor.store.models import Notification
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release

pytestmark = pytest.mark.integration


def test_a_stable_port_already_taken_fails_the_deployment_and_starts_nothing(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = f"""
        staging:
          deploy: {{ target: process, start: python3 app.py, port: {port} }}
          {HEALTH}
        """
        release(repo, conveyor, "v1", pipeline(env))

        async def scenario() -> None:
            async with delivery(conveyor.home) as h:
                await h.settle()
                [failed] = h.deployments("staging")
                assert failed["status"] == "failed"
                assert f"port {port}" in failed["reason"]
                assert "already in use" in failed["reason"]
                assert h.env("staging")["version"] is None
                assert not list((conveyor.home / "deploy" / "shop" / "staging").glob("logs/*"))

        asyncio.run(scenario())


def test_a_health_endpoint_that_hangs_fails_within_its_bounds_and_the_old_release_serves(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = """
    staging:
      deploy: { target: process, start: python3 app.py, strategy: blue-green }
      health: { http: { path: /healthz, within: 1s, interval: 50ms, timeout: 200ms } }
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            release(repo, conveyor, "v2", pipeline(env), healthy="hang")
            await h.settle()
            _, failed = h.deployments("staging")
            assert failed["status"] == "failed"
            assert "timed out" in failed["reason"]
            assert (await h.get(h.env("staging")["url"])).text == "v1"

    asyncio.run(scenario())


def test_a_rollback_with_no_earlier_release_is_refused_clearly(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    env = f"""
    staging:
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            refused = conveyor("rollback", "staging")
            assert refused.returncode == 1
            assert "has no earlier release to roll back to" in refused.stderr
            assert [d["kind"] for d in h.deployments("staging")] == ["deploy"]

    asyncio.run(scenario())


def test_a_notifier_that_keeps_failing_never_blocks_the_deployment(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    env = f"""
    staging:
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    """
    extra = f"""
    notify:
      - webhook: {{ url: "{dead}" }}
        on: [deployment.started, deployment.succeeded]
    """
    release(repo, conveyor, "v1", pipeline(env, extra=extra))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            assert h.deployments("staging")[0]["status"] == "succeeded"
            await h.outbox.drain()
            with h.store.session() as session:
                rows = session.scalars(select(Notification).order_by(Notification.id)).all()
                assert [(r.event, r.status) for r in rows] == [
                    ("deployment.started", "failed"),
                    ("deployment.succeeded", "failed"),
                ]
                assert all(r.attempts == 5 for r in rows)
                assert all("could not reach webhook" in (r.error or "") for r in rows)

    asyncio.run(scenario())


def test_approvers_can_come_from_the_users_file(repo: GitRepo, conveyor: Conveyor) -> None:
    (conveyor.home).mkdir(parents=True, exist_ok=True)
    (conveyor.home / "users.yml").write_text(
        "users:\n  olga: { emails: [olga@example.com], groups: [ops] }\n"
    )
    env = f"""
    production:
      approval: {{ approvers: [ops] }}
      deploy: {{ target: process, start: python3 app.py }}
      {HEALTH}
    """
    release(repo, conveyor, "v1", pipeline(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [approval] = conveyor("approvals", "--json").json()
            conveyor.extra_env["CONVEYOR_USER"] = "olga"
            conveyor("approve", str(approval["id"]), check=True)
            await h.settle()
            assert (await h.get(h.env("production")["url"])).text == "v1"

    asyncio.run(scenario())
    assert "olga" in conveyor("user", "list").stdout
