"""The server's background services under one supervisor: a service that fails or ends on its
own is started again, a failing periodic step is tried again at its next turn, and stopping is
bounded even when a service will not stop."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.exc import OperationalError

from conveyor.server.services import Service, Supervisor, periodic

FAST = (0.01, 0.02)
BOUND = 10.0


def test_a_service_that_fails_or_ends_on_its_own_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts: list[int] = []
    third = asyncio.Event()

    async def flaky() -> None:
        starts.append(len(starts) + 1)
        if len(starts) == 1:
            raise RuntimeError("boom")
        if len(starts) == 2:
            return  # ended on its own
        third.set()
        await asyncio.Event().wait()  # serves until cancelled

    async def scenario() -> list[str]:
        supervisor = Supervisor(restart=FAST)
        supervisor.start(Service("flaky", flaky))
        await asyncio.wait_for(third.wait(), BOUND)
        names = supervisor.names
        await supervisor.stop()
        return names

    with caplog.at_level(logging.INFO, logger="conveyor.server"):
        assert asyncio.run(scenario()) == ["flaky"]
    assert starts == [1, 2, 3]
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("flaky failed; starting it again") for m in said), said
    assert any(m.startswith("flaky stopped on its own; starting it again") for m in said), said


def test_stopping_is_bounded_even_when_a_service_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> bool:
        running, release = asyncio.Event(), asyncio.Event()

        async def stubborn() -> None:
            running.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # will not stop until the test lets it

        supervisor = Supervisor(restart=FAST)
        supervisor.start(Service("stubborn", stubborn))
        await asyncio.wait_for(running.wait(), BOUND)
        await asyncio.wait_for(supervisor.stop(timeout=0.2), BOUND)
        stopped_while_stuck = not release.is_set()
        release.set()
        return stopped_while_stuck

    with caplog.at_level(logging.WARNING, logger="conveyor.server"):
        assert asyncio.run(scenario())
    assert "stubborn did not stop within 0.2 s" in [r.getMessage() for r in caplog.records]


def test_a_failing_periodic_step_is_tried_again_at_its_next_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database or disk is full"))
        if len(calls) == 2:
            raise ValueError("a bug")
        done.set()

    async def scenario() -> None:
        wake = asyncio.Event()
        supervisor = Supervisor(restart=FAST)
        supervisor.start(periodic("intake", step, wake=wake, every=0.01))
        await asyncio.wait_for(done.wait(), BOUND)
        await supervisor.stop()

    with caplog.at_level(logging.ERROR, logger="conveyor.server"):
        asyncio.run(scenario())
    assert len(calls) >= 3
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    # The store's failure in one line, a bug with its traceback; both tried again.
    assert ("intake failed: the store: database or disk is full; trying again", False) in said
    assert ("intake failed; trying again", True) in said
