"""The sandbox the security tests run pipeline code in: this machine's, as `conveyor server`
would configure it. In CI it must work here (never a skip)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

from conveyor.sandbox import INSTALL, Sandbox, SandboxUnavailable, configure
from tests.conftest import Conveyor


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str, fix: str = f"install it with {INSTALL}") -> NoReturn:
    message = f"{reason}: {fix}"
    if in_ci():
        pytest.fail(f"{message} (in CI the sandbox tests must run, never skip)", pytrace=False)
    pytest.skip(message)


def server_environ() -> dict[str, str]:
    """This process's environment without Conveyor's settings (a test's own choice)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if shutil.which("bwrap") is None:
        unavailable("bubblewrap (bwrap) is not installed")
    try:
        return configure(environ=server_environ())
    except SandboxUnavailable as exc:
        unavailable(exc.message, "see the message")


def limited(conveyor: Conveyor, **limits: str) -> Conveyor:
    """``conveyor`` with the operator's ceilings CONVEYOR_LIMIT_<NAME> set."""
    conveyor.extra_env.update({f"CONVEYOR_LIMIT_{k.upper()}": v for k, v in limits.items()})
    return conveyor
