"""The REST API as a client sees it: tokens and scopes, runs of real commits executed by the
built-in runner, cancel and rerun, logs (paged and streamed), artifacts, the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import GitRepo
from tests.server.conftest import (
    API,
    BASE_URL,
    Api,
    Serve,
    StreamingASGITransport,
    sha256_of,
    until,
)

from conveyor.proc import process_alive
from conveyor.server.tokens import revoke_token
from conveyor.store.models import Token


def pipeline(service: str, jobs: str) -> dict[str, str]:
    """A conveyor.yml for `service` with `jobs` (YAML, indented by two spaces)."""
    return {"conveyor.yml": f"service: {service}\njobs:\n{jobs}"}


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> str:
    """The response is a JSON error of this status and code whose message names `words`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    assert message.strip()
    for word in words:
        assert word in message, (word, message)
    return message


# --- authentication and scopes ---------------------------------------------------------------


def test_requests_without_a_valid_token_are_refused(serve: Serve, repo: GitRepo) -> None:
    async def body(api: Api) -> None:
        r = await api.client.get(f"{API}/runs")
        assert_error(r, 401, "unauthorized", "token")

        for bad in ("cvy_" + "A" * 43, "not-even-a-conveyor-token", "cvy_" + "x" * 500):
            r = await api.get("/runs", token=bad)
            assert_error(r, 401, "unauthorized", "unknown or revoked token")

        r = await api.client.get(f"{API}/runs", headers={"Authorization": f"Basic {api.admin}"})
        assert_error(r, 401, "unauthorized")

        token = api.token("read")
        assert (await api.get("/runs", token=token)).status_code == 200
        revoke_token(api.store, "token-1")
        r = await api.get("/runs", token=token)
        assert_error(r, 401, "unauthorized", "unknown or revoked token")

        # Endpoints that need no token.
        assert (await api.client.get(f"{API}/health")).json()["status"] == "ok"

    serve(body)


def test_each_scope_allows_what_it_implies_and_nothing_more(serve: Serve, repo: GitRepo) -> None:
    repo.commit("pipeline", pipeline("svc", "  build:\n    run: echo hi\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        read, trigger, approve, runner = (
            api.token(s) for s in ("read", "trigger", "approve", "runner")
        )
        admin = api.token("admin")
        run_body = {"service": "svc"}
        service_body = {"name": "other", "repository": str(repo.path)}

        # Admin may use the runner protocol too (no job is queued yet: nothing is taken).
        r = await api.post("/runners/lease", {"name": "probe", "wait": 0}, token=admin)
        assert r.status_code == 204, r.text
        r = await api.post("/runners/lease", {"name": "probe", "wait": 0}, token=read)
        assert_error(r, 403, "forbidden", "runner")

        for token in (read, trigger, approve):
            assert (await api.get("/runs", token=token)).status_code == 200
        assert_error(await api.get("/runs", token=runner), 403, "forbidden", "read scope")

        for token in (read, approve, runner):
            r = await api.post("/runs", run_body, token=token)
            assert_error(r, 403, "forbidden", "trigger scope")
        for token in (read, trigger, approve, runner):
            r = await api.post("/services", service_body, token=token)
            assert_error(r, 403, "forbidden", "admin scope")
        assert api.count(Token) == 6  # no side effect of the refused requests either

        runs = [await api.post("/runs", run_body, token=t) for t in (trigger, admin)]
        assert [r.status_code for r in runs] == [201, 201]
        assert [r.json()["trigger"] for r in runs] == ["api:token-2", "api:token-5"]
        r = await api.post("/services", service_body, token=admin)
        assert r.status_code == 201, r.text
        for r in runs:
            assert (await api.wait_run(r.json()["id"]))["status"] == "succeeded"

    serve(body)


def test_tokens_are_stored_only_as_hashes(serve: Serve, tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        tokens = [api.admin, api.token("read"), api.token("trigger", user="ada")]
        for token in tokens:
            assert (await api.get("/runs", token=token)).status_code == 200
        with api.store.session() as session:
            hashes = set(session.scalars(select(Token.token_hash)))
        assert len(hashes) == 3
        for token in tokens:
            assert sha256_of(token.encode()).removeprefix("sha256:") in hashes
        if api.store.engine.dialect.name == "sqlite":  # the bytes on disk, too
            files = sorted(api.home.glob("conveyor.db*"))
            assert files, "no database file"
            stored = b"".join(f.read_bytes() for f in files)
            for token in tokens:
                assert token.encode() not in stored
                assert token[4:].encode() not in stored

    serve(body)


# --- runs --------------------------------------------------------------------------------------


def test_a_run_executes_the_pipeline_of_the_commit_asked_for(serve: Serve, repo: GitRepo) -> None:
    old = repo.commit("green", pipeline("svc", "  check:\n    run: echo old commit\n"))
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit(
        "feature",
        pipeline(
            "svc",
            "  one:\n    run: echo feature one\n"
            "  two:\n    needs: [one]\n    steps:\n"
            "      - name: first\n        run: echo step one\n"
            "      - name: second\n        run: echo step two\n",
        ),
    )
    repo.git("checkout", "-q", "main")
    head = repo.commit("red", pipeline("svc", "  check:\n    run: echo head commit; exit 3\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        queued = {rev: await api.trigger("svc", rev) for rev in ("HEAD", "feature", old)}
        assert queued["HEAD"]["status"] in ("queued", "running")  # a snapshot
        runs = {rev: await api.wait_run(q["id"]) for rev, q in queued.items()}

        red = runs["HEAD"]
        assert (red["sha"], red["ref"], red["status"]) == (head, "refs/heads/main", "failed")
        assert red["subject"] == "red"
        [job] = red["jobs"]
        assert (job["name"], job["status"]) == ("check", "failed")
        assert job["reason"] == "step check exited with 3"
        assert [(s["name"], s["status"], s["exit_code"]) for s in job["steps"]] == [
            ("check", "failed", 3)
        ]
        assert await api.logs(red["id"]) == ["head commit"]

        branch = runs["feature"]
        assert (branch["sha"], branch["ref"], branch["status"]) == (
            feature,
            "refs/heads/feature",
            "succeeded",
        )
        assert [(j["name"], j["status"], j["needs"]) for j in branch["jobs"]] == [
            ("one", "succeeded", []),
            ("two", "succeeded", ["one"]),
        ]
        assert [(s["name"], s["status"]) for s in branch["jobs"][1]["steps"]] == [
            ("first", "succeeded"),
            ("second", "succeeded"),
        ]
        assert sorted(await api.logs(branch["id"])) == ["feature one", "step one", "step two"]

        by_sha = runs[old]
        assert (by_sha["sha"], by_sha["ref"], by_sha["status"]) == (old, None, "succeeded")
        assert await api.logs(by_sha["id"]) == ["old commit"]

    serve(body)


def test_runs_can_be_listed_by_service_and_status(
    serve: Serve, repo: GitRepo, tmp_path: Path
) -> None:
    repo.commit("green", pipeline("svc", "  check:\n    run: 'true'\n"))
    repo.git("branch", "green")
    repo.commit("red", pipeline("svc", "  check:\n    run: 'false'\n"))
    other = GitRepo(tmp_path / "other")
    other.path.mkdir()
    other.git("init", "-q", "-b", "main")
    other.commit("other", pipeline("other", "  check:\n    run: 'true'\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        await api.register("other", other.path)
        ids = [
            (await api.trigger(service, rev))["id"]
            for service, rev in (("svc", "green"), ("svc", "HEAD"), ("other", "HEAD"))
        ]
        for run_id in ids:
            await api.wait_run(run_id)

        async def listed(**params: Any) -> list[tuple[int, str, str]]:
            r = await api.get("/runs", params=params)
            assert r.status_code == 200, r.text
            return [(run["id"], run["service"], run["status"]) for run in r.json()]

        a, b, c = ids
        assert await listed() == [
            (c, "other", "succeeded"),
            (b, "svc", "failed"),
            (a, "svc", "succeeded"),
        ]
        assert await listed(service="svc") == [(b, "svc", "failed"), (a, "svc", "succeeded")]
        assert await listed(status="failed") == [(b, "svc", "failed")]
        assert await listed(service="svc", status="succeeded") == [(a, "svc", "succeeded")]
        assert await listed(limit=2) == [(c, "other", "succeeded"), (b, "svc", "failed")]
        assert await listed(service="nope") == []
        assert_error(await api.get("/runs", params={"limit": 0}), 422, "invalid_request", "limit")

    serve(body)


def test_unknown_runs_services_and_revisions_are_clear_errors(serve: Serve, repo: GitRepo) -> None:
    repo.commit("pipeline", pipeline("svc", "  check:\n    run: 'true'\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        for run_id in ("999", "0", str(2**64)):
            assert_error(await api.get(f"/runs/{run_id}"), 404, "not_found", "no run")
        assert_error(await api.get("/runs/999/logs"), 404, "not_found", "no run 999")
        assert_error(await api.post("/runs/999/cancel"), 404, "not_found", "no run 999")
        r = await api.post("/runs/999/rerun", {})
        assert_error(r, 404, "not_found", "no run 999")

        r = await api.post("/runs", {"service": "nope"})
        assert_error(r, 404, "not_found", "no service 'nope'")

        r = await api.post("/runs", {"service": "svc", "rev": "no-such-branch"})
        assert_error(r, 400, "bad_request", "unknown revision 'no-such-branch'")
        r = await api.post("/runs", {"service": "svc", "rev": "0" * 40})
        assert_error(r, 400, "bad_request", "unknown revision")
        r = await api.post("/runs", {"service": "svc", "rev": "--output=/tmp/x"})
        assert_error(r, 422, "invalid_request", "rev")
        assert (await api.get("/runs")).json() == []

    serve(body)


def test_cancelling_a_running_run_stops_its_step_process(
    serve: Serve, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step writes its pid outside its workspace: unsandboxed (a sandboxed step's $$ is of
    # its own pid namespace). tests/security shows cancelling a sandboxed step.
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    pidfile, never = tmp_path / "pid", tmp_path / "never"
    repo.commit(
        "slow",
        pipeline(
            "svc",
            f"  wait:\n    run: |\n      echo $$ > {pidfile}\n"
            f"      while [ ! -f {never} ]; do sleep 0.05; done\n"
            "  after:\n    needs: [wait]\n    run: echo never runs\n",
        ),
    )

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        run_id = (await api.trigger("svc"))["id"]

        async def step_pid() -> int | None:
            text = pidfile.read_text() if pidfile.exists() else ""
            return int(text) if text.endswith("\n") else None

        pid = await until(step_pid, what="the step to start")
        assert process_alive(pid)
        assert (await api.run(run_id))["status"] == "running"

        r = await api.post(f"/runs/{run_id}/rerun", {"failed_only": True})
        assert_error(r, 400, "bad_request", f"run {run_id} is still running")

        r = await api.post(f"/runs/{run_id}/cancel")
        assert r.status_code == 200, r.text
        assert r.json() == {"run": run_id, "was": "running", "jobs": 2}

        run = await api.wait_run(run_id)
        assert run["status"] == "cancelled"
        jobs = {j["name"]: j for j in run["jobs"]}
        assert jobs["wait"]["status"] == "cancelled", jobs
        assert jobs["wait"]["steps"][0]["status"] == "cancelled"
        assert jobs["after"]["status"] in ("cancelled", "skipped")
        assert not process_alive(pid), "the step's process outlived the cancelled run"
        assert "never runs" not in await api.logs(run_id)

        r = await api.post(f"/runs/{run_id}/cancel")
        assert_error(r, 400, "bad_request", "already been cancelled")

    serve(body)


def test_rerun_of_failed_jobs_keeps_what_succeeded(
    serve: Serve, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The jobs count builds and look for the marker outside their workspaces: unsandboxed.
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    builds, marker = tmp_path / "builds", tmp_path / "marker"
    repo.commit(
        "pipeline",
        pipeline(
            "svc",
            f"  build:\n    run: |\n      echo built >> {builds}\n      mkdir -p dist\n"
            '      echo "run $CONVEYOR_RUN_ID $(date +%s%N)" > dist/out.txt\n'
            "    artifacts: [dist/out.txt]\n"
            f"  check:\n    needs: [build]\n    run: test -f {marker}\n",
        ),
    )

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        first = await api.wait_run((await api.trigger("svc"))["id"])
        assert first["status"] == "failed"
        assert [(j["name"], j["status"]) for j in first["jobs"]] == [
            ("build", "succeeded"),
            ("check", "failed"),
        ]
        [artifact] = first["artifacts"]
        assert (artifact["job"], artifact["path"]) == ("build", "dist/out.txt")

        r = await api.get(f"/artifacts/{artifact['digest']}")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert sha256_of(r.content) == artifact["digest"]
        assert len(r.content) == artifact["size"]
        assert r.content.startswith(f"run {first['id']} ".encode())
        assert builds.read_text() == "built\n"

        marker.touch()  # outside the repository: the same commit now passes `check`
        r = await api.post(f"/runs/{first['id']}/rerun", {"failed_only": True})
        assert r.status_code == 201, r.text
        queued = r.json()
        assert queued["id"] != first["id"]
        assert queued["sha"] == first["sha"]
        assert queued["trigger"] == "rerun:admin"
        second = await api.wait_run(queued["id"])
        assert second["status"] == "succeeded"
        build, check = second["jobs"]
        assert (build["status"], build["reason"]) == ("succeeded", f"reused from run {first['id']}")
        assert build["steps"] == first["jobs"][0]["steps"]
        assert (check["status"], check["reason"]) == ("succeeded", None)
        assert second["artifacts"] == first["artifacts"]
        assert builds.read_text() == "built\n", "a succeeded job ran again"
        assert await api.logs(second["id"]) == []  # check prints nothing; build did not run

        r = await api.post(f"/runs/{second['id']}/rerun", {})
        assert r.status_code == 201, r.text
        third = await api.wait_run(r.json()["id"])
        assert third["status"] == "succeeded"
        assert [j["reason"] for j in third["jobs"]] == [None, None]
        assert builds.read_text() == "built\nbuilt\n"
        [again] = third["artifacts"]
        assert again["digest"] != artifact["digest"]
        r = await api.get(f"/artifacts/{again['digest']}")
        assert r.content.startswith(f"run {third['id']} ".encode())

    serve(body)


def test_unknown_artifacts_are_404(serve: Serve) -> None:
    async def body(api: Api) -> None:
        for digest in ("sha256:" + "0" * 64, "md5:abc", "..%2F..%2Fconveyor.db", "sha256:..%2Fx"):
            assert_error(await api.get(f"/artifacts/{digest}"), 404, "not_found")
        r = await api.client.get(f"{API}/artifacts/sha256:{'0' * 64}")
        assert_error(r, 401, "unauthorized")

    serve(body)


# --- logs --------------------------------------------------------------------------------------


def test_logs_are_paged_with_a_cursor(serve: Serve, repo: GitRepo) -> None:
    repo.commit("pipeline", pipeline("svc", "  count:\n    run: seq 1 12\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        run_id = (await api.wait_run((await api.trigger("svc"))["id"]))["id"]

        pages: list[dict[str, Any]] = []
        after = 0
        while not pages or not pages[-1]["ended"]:
            r = await api.get(f"/runs/{run_id}/logs", params={"after": after, "limit": 5})
            assert r.status_code == 200, r.text
            pages.append(r.json())
            after = pages[-1]["next"]
            assert len(pages) < 10
        assert [[line["text"] for line in p["lines"]] for p in pages] == [
            ["1", "2", "3", "4", "5"],
            ["6", "7", "8", "9", "10"],
            ["11", "12"],
        ]
        assert [p["ended"] for p in pages] == [False, False, True]
        ids = [line["id"] for p in pages for line in p["lines"]]
        assert ids == sorted(ids)
        assert len(set(ids)) == 12
        assert {line["job"] for p in pages for line in p["lines"]} == {"count"}

        r = await api.get(f"/runs/{run_id}/logs", params={"after": after})
        assert r.json() == {"lines": [], "ended": True, "next": after}
        r = await api.get(f"/runs/{run_id}/logs", params={"job": "count", "limit": 1})
        assert [line["text"] for line in r.json()["lines"]] == ["1"]
        r = await api.get(f"/runs/{run_id}/logs", params={"job": "nope"})
        assert_error(r, 404, "not_found", "no job 'nope'")
        r = await api.get(f"/runs/{run_id}/logs", params={"limit": 0})
        assert_error(r, 422, "invalid_request", "limit")

    serve(body)


def parse_sse(chunk: str) -> tuple[str, Any]:
    fields = dict(line.split(": ", 1) for line in chunk.splitlines())
    return fields["event"], json.loads(fields["data"])


def test_log_stream_delivers_lines_as_they_are_written(
    serve: Serve, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")  # the step waits for a file outside it
    go = tmp_path / "go"
    repo.commit(
        "pipeline",
        pipeline(
            "svc",
            "  talk:\n    run: |\n      echo first\n"
            f"      while [ ! -f {go} ]; do sleep 0.05; done\n      echo second\n",
        ),
    )

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        run_id = (await api.trigger("svc"))["id"]
        events: list[tuple[str, Any]] = []
        status_at_first = None
        stream_url = f"{API}/runs/{run_id}/logs/stream"
        async with httpx.AsyncClient(
            transport=StreamingASGITransport(api.app), base_url=BASE_URL
        ) as streaming:
            # A client that goes away mid-run: the server stops streaming to it (the transport
            # fails the test if the app goes on).
            async with streaming.stream("GET", stream_url, headers=api.auth(api.admin)) as r:
                first = await anext(r.aiter_text())
            assert parse_sse(first.split("\n\n")[0])[1]["text"] == "first"
            assert (await api.run(run_id))["status"] == "running"

        async with (
            httpx.AsyncClient(
                transport=StreamingASGITransport(api.app), base_url=BASE_URL
            ) as streaming,
            streaming.stream("GET", stream_url, headers=api.auth(api.admin)) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            buffer = ""
            async for text in r.aiter_text():
                buffer += text
                while "\n\n" in buffer:
                    chunk, buffer = buffer.split("\n\n", 1)
                    events.append(parse_sse(chunk))
                    if events[-1] == ("line", events[-1][1]) and events[-1][1]["text"] == "first":
                        status_at_first = (await api.run(run_id))["status"]
                        go.touch()  # only now may the step print its second line
        assert status_at_first == "running", "the first line came only after the run ended"
        assert [(kind, data.get("text")) for kind, data in events] == [
            ("line", "first"),
            ("line", "second"),
            ("end", None),
        ]
        assert events[-1][1] == {"run": run_id}
        assert events[0][1]["id"] < events[1][1]["id"]
        assert {data["job"] for kind, data in events if kind == "line"} == {"talk"}
        assert (await api.run(run_id))["status"] == "succeeded"

        # A stream opened after the run ended replays it and ends at once; `after` skips.
        async with httpx.AsyncClient(
            transport=StreamingASGITransport(api.app), base_url=BASE_URL
        ) as streaming:
            r = await streaming.get(
                f"{API}/runs/{run_id}/logs/stream",
                params={"after": events[0][1]["id"]},
                headers=api.auth(api.admin),
            )
        replay = [parse_sse(c) for c in r.text.split("\n\n") if c.strip()]
        assert [(kind, data.get("text")) for kind, data in replay] == [
            ("line", "second"),
            ("end", None),
        ]
        r = await api.client.get(f"{API}/runs/{run_id}/logs/stream")
        assert_error(r, 401, "unauthorized")
        assert_error(await api.get("/runs/999/logs/stream"), 404, "not_found", "no run 999")

    serve(body)


# --- the API description -----------------------------------------------------------------------


def test_openapi_document_lists_the_api(serve: Serve) -> None:
    async def body(api: Api) -> None:
        r = await api.client.get(f"{API}/openapi.json")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["info"]["title"] == "Conveyor"
        paths = doc["paths"]
        expected = {
            "/api/v1/health": {"get"},
            "/api/v1/services": {"get", "post"},
            "/api/v1/runs": {"get", "post"},
            "/api/v1/runs/{run_id}": {"get"},
            "/api/v1/runs/{run_id}/cancel": {"post"},
            "/api/v1/runs/{run_id}/rerun": {"post"},
            "/api/v1/runs/{run_id}/logs": {"get"},
            "/api/v1/runs/{run_id}/logs/stream": {"get"},
            "/api/v1/runs/{run_id}/artifacts": {"get"},
            "/api/v1/artifacts/{digest}": {"get", "put"},
            "/api/v1/hooks/git": {"post"},
            "/api/v1/hooks/{forge}/{service}": {"post"},
            "/api/v1/runners/lease": {"post"},
            "/api/v1/jobs/{job_id}/reports": {"post"},
        }
        for path, methods in expected.items():
            assert path in paths, path
            assert methods <= set(paths[path]), (path, set(paths[path]))
        assert "HTTPBearer" in doc["components"]["securitySchemes"]
        assert (
            "text/event-stream"
            in (paths["/api/v1/runs/{run_id}/logs/stream"]["get"]["responses"]["200"]["content"])
        )
        assert (await api.client.get(f"{API}/docs")).status_code == 200

    serve(body)
