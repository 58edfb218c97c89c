"""`conveyor approvals` says what each pending approval brings: what the environment serves
now, the commits of the range (the one the no-self-approval rule reads) with their authors,
and how the release's checks and verification went in staging. A real `conveyor run`, a real
delivery controller on the same data directory, a real process deployed and checked over
HTTP, a verification step run for real."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import APP, STAGED_THEN_APPROVED, delivery, pipeline

pytestmark = pytest.mark.integration


def test_approvals_lists_the_commits_coming_their_authors_and_stagings_checks(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit(
        "Add the shop",
        {
            "app.py": APP,
            "VERSION": "v1",
            "HEALTHY": "yes",
            "conveyor.yml": pipeline(STAGED_THEN_APPROVED),
        },
    )
    repo.write("VERSION", "v1.1")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "Faster checkout", "--author", "Bob Builder <bob@x.org>")
    conveyor("run", check=True)

    async def deploy() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            assert h.env("staging")["healthy"] is True
            assert [d["status"] for d in h.deployments("production")] == ["awaiting_approval"]

    asyncio.run(deploy())
    [pending] = conveyor("approvals", "--json", check=True).json()
    context = pending["context"]
    assert context["commit_count"] == 2
    assert context["authors"] == ["Bob Builder", "Ada Author"]
    assert [c["outcome"] for c in context["checks"][0]["checks"]] == ["pass", "pass"]

    shown = conveyor("approvals", check=True).stdout
    block = shown.split(f"\napproval {pending['id']}: shop {pending['version']} to production\n")
    lines = block[1].splitlines()
    head = repo.git("rev-parse", "--short=7", "HEAD")
    first = repo.git("rev-parse", "--short=7", "HEAD~1")
    assert lines == [
        "  serving now   nothing yet",
        "  brings        2 commits by Bob Builder, Ada Author",
        f"                {head} Faster checkout — Bob Builder",
        f"                {first} Add the shop — Ada Author",
        "  staging       succeeded: http pass, verify pass",
    ]
