"""Runner agents as real processes (`conveyor runner`) against a real `conveyor server
--runners 0`: labels, logs and artifacts over HTTP, and the failure drills of the runner
protocol (kill -9 of an agent, kill -9 of the server, a stale runner's reports)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import GitRepo
from tests.serverproc import Processes, ServerProcess, until

from conveyor.errors import StaleLease
from conveyor.reports import StepOutcome
from conveyor.runner.agent import HttpReporter
from conveyor.runner.artifacts import ArtifactStore
from conveyor.states import JobStatus, StepStatus

pytestmark = pytest.mark.integration


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def commit_pipeline(repo: GitRepo, text: str) -> str:
    return repo.commit("pipeline", {"conveyor.yml": text})


def wait_for_gate(gate: Path) -> str:
    """Shell that waits (at most ~15 s, so a stray process ends by itself) for `gate`. A
    sandboxed step cannot see it: the agents of the tests that use it run unsandboxed."""
    return f'for i in $(seq 300); do [ -e "{gate}" ] && break; sleep 0.05; done; [ -e "{gate}" ]'


def job_lines(server: ServerProcess, run_id: int, job: str) -> list[dict[str, Any]]:
    return server.logs(run_id, job)


def texts(lines: list[dict[str, Any]]) -> list[str]:
    return [line["text"] for line in lines]


def assert_log_numbered_once(lines: list[dict[str, Any]]) -> None:
    """A job's log lines are numbered 1..n with no gap and no number twice."""
    seqs = [line["seq"] for line in lines]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


# --- a. labels, logs and artifacts -----------------------------------------------------------


def test_agents_take_the_jobs_their_labels_allow_and_report_logs_and_artifacts(
    procs: Processes, repo: GitRepo
) -> None:
    commit_pipeline(
        repo,
        """\
        service: labels
        jobs:
          build:
            steps:
              - name: compile
                run: |
                  echo "compiling $CONVEYOR_JOB at $CONVEYOR_SHORT_SHA"
                  mkdir -p dist && printf 'payload %s\\n' "$CONVEYOR_SHA" > dist/out.txt
            artifacts: [dist/out.txt]
          train:
            runs_on: [gpu]
            run: echo "training on a gpu"
        """,
    )
    sha = repo.git("rev-parse", "HEAD")
    server = procs.server()
    token = server.token("agents", "runner")
    server.add_service("labels", repo.path)
    plain = procs.agent(server, token, "plain", "linux", slots=2)

    run_id = server.trigger("labels")["id"]
    until(
        lambda: server.job(run_id, "build")["status"] == "succeeded",
        20,
        "the agent without the gpu label to run build",
    )
    # It had a free slot and polled the whole time, but train needs a label it lacks.
    train = server.job(run_id, "train")
    assert train["status"] == "queued"
    assert train["runner"] is None
    assert "(train)" not in plain.stdout()

    gpu = procs.agent(server, token, "gpu", "linux,gpu")
    final = server.wait_run(run_id, 20)

    assert final["status"] == "succeeded", final
    runners = {job["name"]: job["runner"] for job in final["jobs"]}
    assert runners == {"build": "plain (agents)", "train": "gpu (agents)"}
    assert "compiling build at " + sha[:12] in texts(job_lines(server, run_id, "build"))
    assert "training on a gpu" in texts(job_lines(server, run_id, "train"))
    for job in ("build", "train"):
        assert_log_numbered_once(job_lines(server, run_id, job))

    payload = f"payload {sha}\n".encode()
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert final["artifacts"] == [
        {"job": "build", "path": "dist/out.txt", "digest": digest, "size": len(payload)}
    ]
    r = server.api("GET", f"/artifacts/{digest}")
    assert r.status_code == 200
    assert r.content == payload

    # One plain line per job: leased, then finished with its status.
    build_lines = [line for line in plain.stdout().splitlines() if "(build)" in line]
    assert len(build_lines) == 2, plain.stdout()
    assert build_lines[0].endswith(f"(build) of run {run_id} leased: labels at {sha[:12]}")
    assert f"(build) of run {run_id} finished: succeeded in " in build_lines[1]
    assert any("(train)" in ln and "finished: succeeded" in ln for ln in gpu.stdout().splitlines())
    # Idle agents stop at once on SIGTERM, cleanly.
    assert plain.stop() == 0
    assert gpu.stop() == 0
    assert "Traceback" not in plain.stderr() + gpu.stderr()


# --- b. kill -9 of an agent ------------------------------------------------------------------


@pytest.mark.drill
def test_a_job_of_a_killed_agent_is_leased_again_and_finished_by_another(
    procs: Processes, repo: GitRepo, tmp_path: Path
) -> None:
    gate, starts = tmp_path / "gate", tmp_path / "starts"
    commit_pipeline(
        repo,
        f"""\
        service: drill
        jobs:
          slow:
            steps:
              - name: wait
                run: |
                  echo "waiting at the gate"
                  echo started >> "{starts}"
                  {wait_for_gate(gate)}
                  echo "through the gate"
              - name: after
                run: echo "second step"
        """,
    )
    server = procs.server(lease_seconds=3)
    token = server.token("agents", "runner")
    server.add_service("drill", repo.path)
    first = procs.agent(server, token, "first", sandbox=False)
    run_id = server.trigger("drill")["id"]

    def started() -> int:
        return len(starts.read_text().splitlines()) if starts.exists() else 0

    until(lambda: started() == 1, 20, "the first agent to start the step")
    first.kill9()
    second = procs.agent(server, token, "second", sandbox=False)
    until(lambda: started() == 2, 20, "the job to be leased again and started by the second")
    assert server.job(run_id, "slow")["runner"] == "second (agents)"
    gate.touch()
    final = server.wait_run(run_id, 20)

    assert final["status"] == "succeeded", final
    (job,) = final["jobs"]
    assert job["runner"] == "second (agents)"
    assert [(s["name"], s["status"], s["attempts"]) for s in job["steps"]] == [
        ("wait", "succeeded", 1),
        ("after", "succeeded", 1),
    ]
    requeued = server.events(run_id, "taskrun.requeued")
    assert [(e["job"], e["runner"], e["lease"]) for e in requeued] == [
        ("slow", "first (agents)", 1)
    ]
    # Each step finished once: the first agent died before reporting an end.
    finished = Counter(e["position"] for e in server.events(run_id, "step.finished"))
    assert finished == {0: 1, 1: 1}
    assert len(server.events(run_id, "taskrun.finished")) == 1
    lines = job_lines(server, run_id, "slow")
    assert_log_numbered_once(lines)
    assert texts(lines).count("through the gate") == 1
    assert texts(lines).count("second step") == 1
    # The agent says so once it has the server's answer, which may come after the run ended.
    until(lambda: "finished: succeeded" in second.stdout(), 10, "the agent to say it finished")


# --- c. kill -9 of the server ----------------------------------------------------------------


@pytest.mark.drill
def test_reports_buffered_while_the_server_is_down_are_delivered_once(
    procs: Processes, repo: GitRepo, tmp_path: Path
) -> None:
    gate, printed, done = tmp_path / "gate", tmp_path / "printed", tmp_path / "step-done"
    commit_pipeline(
        repo,
        f"""\
        service: outage
        jobs:
          long:
            steps:
              - name: before
                run: |
                  for i in $(seq 1 40); do echo "line $i"; done
                  touch "{printed}"
                  {wait_for_gate(gate)}
                  for i in $(seq 41 80); do echo "line $i"; done
                  touch "{done}"
              - name: after
                run: for i in $(seq 81 100); do echo "line $i"; done
        """,
    )
    server = procs.server()
    token = server.token("agents", "runner")
    server.add_service("outage", repo.path)
    agent = procs.agent(server, token, "steady", sandbox=False)
    run_id = server.trigger("outage")["id"]

    until(
        lambda: "line 40" in texts(job_lines(server, run_id, "long")),
        20,
        "the first 40 lines on the server",
    )
    server.kill9()
    gate.touch()
    until(done.exists, 15, "the step to print its last lines while the server is down")
    server.start()  # same port, same data directory
    final = server.wait_run(run_id, 25)

    assert final["status"] == "succeeded", final
    lines = job_lines(server, run_id, "long")
    assert_log_numbered_once(lines)
    assert [t for t in texts(lines) if t.startswith("line ")] == [
        f"line {i}" for i in range(1, 101)
    ]
    assert len(server.events(run_id, "taskrun.finished")) == 1
    assert server.events(run_id, "taskrun.requeued") == []
    assert Counter(e["position"] for e in server.events(run_id, "step.finished")) == {0: 1, 1: 1}
    assert agent.stdout().count("finished: succeeded") == 1
    assert agent.alive()


# --- d. a stale runner -----------------------------------------------------------------------


def test_a_runner_whose_job_was_leased_again_is_refused_and_changes_nothing(
    procs: Processes, repo: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    commit_pipeline(
        repo,
        f"""\
        service: fenced
        jobs:
          deploy:
            run: |
              echo "waiting at the gate"
              {wait_for_gate(gate)}
              echo "deployed"
        """,
    )
    server = procs.server(lease_seconds=2)
    token = server.token("agents", "runner")
    server.add_service("fenced", repo.path)
    run_id = server.trigger("fenced")["id"]

    # A runner takes the job and goes silent (no heartbeat): its lease expires.
    r = server.api(
        "POST", "/runners/lease", token, json={"name": "stale", "labels": [], "wait": 10}
    )
    assert r.status_code == 200, r.text
    old = r.json()
    assert old["lease_seconds"] == 2
    # A live agent gets the job once it is queued again, and waits at the gate in its step.
    agent = procs.agent(server, token, "live", sandbox=False)
    until(
        lambda: "waiting at the gate" in texts(job_lines(server, run_id, "deploy")),
        20,
        "the live agent to run the job",
    )
    before = snapshot(server, run_id)
    assert before["run"]["jobs"][0]["runner"] == "live (agents)"
    assert len(server.events(run_id, "taskrun.requeued")) == 1

    stale_reports = [
        {"seq": 1, "kind": "step_started", "position": 0, "attempt": 1},
        {"seq": 2, "kind": "log", "position": 0, "lines": [[ts(), "from the stale runner"]]},
        {"seq": 3, "kind": "step_finished", "position": 0, "status": "failed", "attempts": 1},
        {"seq": 4, "kind": "job_finished", "status": "failed", "reason": "stale"},
    ]
    r = server.api(
        "POST",
        f"/jobs/{old['job_id']}/reports",
        token,
        json={"token": old["token"], "reports": stale_reports},
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "stale_lease"
    # The agent's own reporter, holding the old lease, gets StaleLease and sends no more.
    assert asyncio.run(stale_reporter(server, token, old, tmp_path)) == "stale"
    assert snapshot(server, run_id) == before

    gate.touch()
    final = server.wait_run(run_id, 20)
    assert final["status"] == "succeeded", final
    lines = job_lines(server, run_id, "deploy")
    assert "from the stale runner" not in texts(lines)
    assert texts(lines).count("deployed") == 1
    assert_log_numbered_once(lines)
    assert len(server.events(run_id, "taskrun.finished")) == 1
    until(lambda: "finished: succeeded" in agent.stdout(), 10, "the agent to say it finished")


def ts() -> str:
    return "2024-01-01T00:00:00+00:00"


def snapshot(server: ServerProcess, run_id: int) -> dict[str, Any]:
    """What a report could change: the run, its logs, its events, the job's report cursor."""
    run = server.run(run_id)
    return {
        "run": run,
        "logs": server.logs(run_id),
        "events": server.query("SELECT count(*) FROM events WHERE run_id = ?", run_id),
        "jobs": server.query(
            "SELECT id, status, lease_token, report_seq FROM jobs WHERE run_id = ?", run_id
        ),
    }


async def stale_reporter(
    server: ServerProcess, token: str, lease: dict[str, Any], tmp_path: Path
) -> str:
    async with httpx.AsyncClient(
        base_url=f"{server.url}/api/v1/", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        reporter = HttpReporter(
            client, lease["job_id"], lease["token"], ArtifactStore(tmp_path / "artifacts")
        )
        try:
            await reporter.step_started(0, 1)
        except StaleLease:
            pass
        else:
            return "accepted"
        with pytest.raises(StaleLease):
            await reporter.heartbeat()  # refused without asking the server again
        assert reporter.delivered == 0
        return "stale"


# --- delivery: a lost answer is sent again, unchanged, and applied once ----------------------


class LosingTransport(httpx.AsyncBaseTransport):
    """Forwards every request, but loses the answer to every other report batch after the
    server has applied it (as when a connection drops on the way back)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.batches: list[list[int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/reports"):
            self.batches.append([r["seq"] for r in json.loads(request.content)["reports"]])
            if len(self.batches) % 2 == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_batch_whose_answer_was_lost_is_sent_again_with_the_same_seqs_and_applied_once(
    procs: Processes, repo: GitRepo, tmp_path: Path
) -> None:
    commit_pipeline(repo, "service: lossy\njobs:\n  build:\n    run: echo by hand\n")
    server = procs.server()
    token = server.token("agents", "runner")
    server.add_service("lossy", repo.path)
    run_id = server.trigger("lossy")["id"]
    r = server.api("POST", "/runners/lease", token, json={"name": "hand", "wait": 10})
    assert r.status_code == 200, r.text
    lease = r.json()
    transport = LosingTransport()

    async def report() -> None:
        async with httpx.AsyncClient(
            base_url=f"{server.url}/api/v1/",
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
        ) as client:
            reporter = HttpReporter(
                client,
                lease["job_id"],
                lease["token"],
                ArtifactStore(tmp_path / "artifacts"),
                give_up=10,
            )
            now = dt.datetime.now(dt.UTC)
            await reporter.step_started(0, 1)
            await reporter.log(0, [(now, "one"), (now, "two")])
            await reporter.log(0, [(now, "three")])
            # A heartbeat is a request of its own (not a numbered report): it never waits
            # behind the log.
            assert not await reporter.heartbeat()
            await reporter.step_finished(0, StepOutcome(StepStatus.SUCCEEDED, 0, None, 1))
            await reporter.job_finished(JobStatus.SUCCEEDED, None)
            assert reporter.delivered == reporter.seq == 5

    asyncio.run(report())

    # Every batch went twice, unchanged; the second time the server skipped it.
    assert transport.batches == [[1], [1], [2], [2], [3], [3], [4], [4], [5], [5]]
    final = server.wait_run(run_id, 15)
    assert final["status"] == "succeeded", final
    lines = job_lines(server, run_id, "build")
    assert texts(lines) == ["one", "two", "three"]
    assert_log_numbered_once(lines)
    for kind in ("step.started", "step.finished", "taskrun.finished"):
        assert len(server.events(run_id, kind)) == 1, kind


# --- stopping: SIGTERM lets the running job finish and takes no new one ----------------------


def test_sigterm_lets_the_running_job_finish_and_takes_no_other(
    procs: Processes, repo: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    commit_pipeline(
        repo,
        f"""\
        service: drain
        jobs:
          first:
            run: |
              echo "waiting at the gate"
              {wait_for_gate(gate)}
          second:
            run: echo "never here"
        """,
    )
    server = procs.server()
    token = server.token("agents", "runner")
    server.add_service("drain", repo.path)
    agent = procs.agent(server, token, "draining", sandbox=False)
    run_id = server.trigger("drain")["id"]
    until(
        lambda: "waiting at the gate" in texts(job_lines(server, run_id, "first")),
        20,
        "the agent to run the first job",
    )

    os.kill(agent.pid, signal.SIGTERM)
    until(lambda: "stopping" in agent.stderr(), 10, "the agent to say it is stopping")
    assert agent.alive()
    gate.touch()
    assert agent.proc.wait(timeout=15) == 0

    assert server.job(run_id, "first")["status"] == "succeeded"
    second = server.job(run_id, "second")
    assert (second["status"], second["runner"]) == ("queued", None)
    assert "(first) of run 1 finished: succeeded" in agent.stdout()
    assert "(second)" not in agent.stdout()
