"""The run page shows a job's attempts apart: an agent killed with -9 mid-step loses the job
(leases of 2 s), a second agent runs it again, and the step's log has a labelled rule where
each attempt begins (docs/decisions/0016-bounded-storage.md)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import GitRepo
from tests.serverproc import Processes, processes, until
from tests.web.conftest import shot

# The fixture of real server processes (tests/serverproc.py).
__all__ = ["processes"]

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PIPELINE = """\
service: lost
jobs:
  build:
    runs_on: [agent]
    run: |
      echo "attempt=$CONVEYOR_ATTEMPT"
      if [ "$CONVEYOR_ATTEMPT" = 1 ]; then sleep 120; fi
"""


@pytest.mark.timeout(90)
def test_a_retried_job_shows_each_attempt_under_its_own_label(
    processes: Processes, repo: GitRepo, page: Page
) -> None:
    repo.commit("pipeline", {"conveyor.yml": PIPELINE})
    server = processes.server(lease_seconds=2)
    server.add_service("lost", repo.path)
    token = server.token("agents", "runner")
    first = processes.agent(server, token, "first", "agent")
    run_id = server.trigger("lost")["id"]
    until(
        lambda: any("attempt=1" in line["text"] for line in server.logs(run_id)),
        30,
        "the first attempt's step to start",
    )
    first.kill9()
    processes.agent(server, token, "second", "agent")
    assert server.wait_run(run_id, 40)["status"] == "succeeded"

    page.goto(f"{server.url}/signin?next=/runs/{run_id}%3Fjob%3Dbuild")
    page.get_by_role("tab", name="Token").click()
    page.get_by_label("API token").fill(server.admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/signin"))
    expect(page.locator(".job-meta")).to_contain_text("Attempt 2")
    step = page.locator("details.step", has_text="attempt=2")
    expect(step.locator(".log-attempt")).to_have_text(
        [
            "Attempt 1 of 2 · ended when its runner stopped answering",
            "Attempt 2 of 2",
        ]
    )
    # Each attempt's lines follow its own label.
    rows = step.locator(".log-attempt, .log-line .lt").all_inner_texts()
    one = rows.index("Attempt 1 of 2 · ended when its runner stopped answering")
    two = rows.index("Attempt 2 of 2")
    assert one < rows.index("attempt=1") < two < rows.index("attempt=2")
    shot(page, "attempts")
