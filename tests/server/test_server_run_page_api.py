"""What the run page reads from the API: a run's job graph with step positions and durations,
the release it produced, the run it re-ran, and log lines that name the step that wrote them."""

from __future__ import annotations

from tests.conftest import GitRepo
from tests.server.conftest import Api, Serve


def pipeline(jobs: str) -> dict[str, str]:
    return {"conveyor.yml": f"service: svc\njobs:\n{jobs}"}


GRAPH = (
    "  build:\n    steps:\n"
    "      - name: compile\n        run: echo compiling\n"
    "      - name: package\n        run: echo packaging\n"
    "  lint:\n    run: echo linting\n"
    "  test:\n    needs: [build, lint]\n    steps:\n"
    "      - name: unit\n        run: echo unit ok\n"
    "      - name: flaky\n        run: |\n          echo about to fail\n          exit 4\n"
    "      - name: never\n        run: echo never\n"
)


def test_run_detail_carries_the_graph_steps_durations_and_release(
    serve: Serve, repo: GitRepo
) -> None:
    repo.commit("graph", pipeline(GRAPH))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        run = await api.wait_run((await api.trigger("svc"))["id"])
        assert run["status"] == "failed"
        assert run["release"] is None, "a failed run produces no release"
        assert run["rerun_of"] is None
        jobs = {j["name"]: j for j in run["jobs"]}
        assert [(j["name"], j["position"]) for j in run["jobs"]] == [
            ("build", 0),
            ("lint", 1),
            ("test", 2),
        ]
        assert jobs["test"]["needs"] == ["build", "lint"]
        for job in run["jobs"]:
            assert job["duration"] is not None, job
            assert job["duration"] >= 0, job
        test = jobs["test"]
        assert [(s["position"], s["name"], s["status"], s["exit_code"]) for s in test["steps"]] == [
            (0, "unit", "succeeded", 0),
            (1, "flaky", "failed", 4),
            (2, "never", "skipped", None),
        ]
        unit, flaky, never = test["steps"]
        assert unit["duration"] >= 0
        assert flaky["duration"] >= 0
        assert never["duration"] is None, "a step that never ran has no duration"

        # Every line names its step by the position the run detail gives it.
        r = await api.get(f"/runs/{run['id']}/logs", params={"job": "test"})
        assert r.status_code == 200, r.text
        lines = [(line["step"], line["seq"], line["text"]) for line in r.json()["lines"]]
        assert lines == [(0, 1, "unit ok"), (1, 2, "about to fail")]
        r = await api.get(f"/runs/{run['id']}/logs", params={"job": "build"})
        assert [(x["step"], x["text"]) for x in r.json()["lines"]] == [
            (0, "compiling"),
            (1, "packaging"),
        ]

        # Re-running only the failed job: the new run says which run it re-ran, and, having
        # succeeded, which release it produced.
        repo.commit("fixed", pipeline(GRAPH.replace("exit 4", "exit 0")))
        r = await api.post(f"/runs/{run['id']}/rerun", {"failed_only": True})
        assert r.status_code == 201, r.text
        again = r.json()
        assert again["rerun_of"] == run["id"]
        assert again["release"] is None
        # Same commit: the step still fails, but the reused jobs keep their durations.
        rerun = await api.wait_run(again["id"])
        reused = {j["name"]: j for j in rerun["jobs"]}
        assert reused["build"]["reason"] == f"reused from run {run['id']}"
        assert reused["build"]["duration"] == jobs["build"]["duration"]
        assert reused["test"]["status"] == "failed"

        green = await api.wait_run((await api.trigger("svc"))["id"])
        assert green["status"] == "succeeded"
        assert isinstance(green["release"], int)
        release = (await api.get(f"/releases/{green['release']}")).json()
        assert release["run"] == green["id"]

    serve(body)


def test_read_only_viewers_may_not_cancel_or_rerun(serve: Serve, repo: GitRepo) -> None:
    repo.commit("red", pipeline("  check:\n    run: exit 1\n"))

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        run = await api.wait_run((await api.trigger("svc"))["id"])
        viewer = api.token("read")
        for path, payload in (
            (f"/runs/{run['id']}/cancel", None),
            (f"/runs/{run['id']}/rerun", {"failed_only": True}),
            (f"/runs/{run['id']}/rerun", {}),
        ):
            r = await api.post(path, payload, token=viewer)
            assert r.status_code == 403, r.text
            assert "trigger" in r.json()["error"]["message"]
        assert [r["id"] for r in (await api.get("/runs", token=viewer)).json()] == [run["id"]]

    serve(body)
