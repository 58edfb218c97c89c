"""The API behind the deployments list, the deployment page and the compare page: real runs of
real commits by two authors, deployed to staging by the process target; GET /deployments
narrowed by status, environment, author, search and time and paged both ways; a deployment's
target, status history and the app's output; two releases compared (commits with authors each
way, artifacts, checks); bad input refused with a clear JSON error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.server.conftest import Api, Serve, until
from tests.server.test_server_api import assert_error
from tests.server.test_server_run_list import commit_by, new_service_repo


def shop(version: str, healthy: bool = True, environment: str = "staging") -> dict[str, str]:
    """The shop at `version`, whose build keeps its version as an artifact, deployed to
    `environment` by the process target; its health check fails unless `healthy`."""
    pipeline = f"""\
service: shop
jobs:
  build:
    run: mkdir -p dist && cat VERSION > dist/version.txt
    artifacts: [dist/version.txt]
environments:
  {environment}:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""
    return {
        "app.py": APP,
        "VERSION": version,
        "HEALTHY": "yes" if healthy else "no",
        "conveyor.yml": pipeline,
    }


async def ship(api: Api, service: str, rev: str) -> int:
    """Run `rev`; the release it made, once staging serves it (if it deploys anywhere)."""
    run = await api.trigger(service, rev, ref="refs/heads/main")
    assert (await api.wait_run(run["id"]))["status"] == "succeeded"
    [release] = (await api.get("/releases", params={"limit": 1})).json()
    release_id: int = release["id"]
    return release_id


async def serving(api: Api, release: int) -> None:
    async def done() -> bool:
        deps = (await api.get("/deployments", params={"release": release})).json()
        return bool(deps) and all(d["status"] == "succeeded" for d in deps)

    await until(done, 30, f"release {release} to serve in staging")


def test_deployments_are_listed_with_filters_and_paged_both_ways_and_shown_one_by_one(
    serve: Serve, repo: GitRepo, tmp_path: Path
) -> None:
    v1 = commit_by(repo, "Ada Lovelace <ada@example.com>", "Ship the shop", shop("v1"))
    commit_by(repo, "Grace Hopper <grace@example.com>", "Fix the basket", shop("v2"))
    v3 = commit_by(repo, "Grace Hopper <grace@example.com>", "Add the till", shop("v3"))

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        before_any = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        releases = []
        for rev in (v1, v3):
            releases.append(await ship(api, "shop", rev))
            await serving(api, releases[-1])
        r1, r3 = releases

        async def listed(**params: Any) -> list[int]:
            r = await api.get("/deployments", params=params)
            assert r.status_code == 200, r.text
            return [d["release"] for d in r.json()]

        assert await listed() == [r3, r1]
        assert await listed(status="succeeded", environment="staging") == [r3, r1]
        assert await listed(status="failed") == []
        assert await listed(author="ADA") == [r1]
        assert await listed(q="till") == [r3]
        assert await listed(q=v1[:9]) == [r1]
        assert await listed(branch="main", service="shop") == [r3, r1]
        assert await listed(since=before_any.isoformat()) == [r3, r1]
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert await listed(since=later) == []
        assert await listed(service="blog") == []
        # Forward by `before`, back by `after`: the same pages either way.
        ids = [d["id"] for d in (await api.get("/deployments")).json()]
        assert (await listed(limit=1)) == [r3]
        assert (await listed(limit=1, before=ids[0])) == [r1]
        assert (await listed(limit=1, before=ids[1])) == []
        assert (await listed(limit=1, after=ids[1])) == [r3]
        assert (await listed(limit=5, after=0)) == [r3, r1]
        assert (await listed(limit=5, after=ids[0])) == []

        for params, words in (
            ({"status": "green"}, ("status", "succeeded")),
            ({"since": "yesterday"}, ("since",)),
            ({"after": -1}, ("after",)),
            ({"q": "x" * 201}, ("q",)),
            ({"release": 0}, ("release",)),
        ):
            r = await api.get("/deployments", params=params)
            assert_error(r, 422, "invalid_request", *words)

        detail = (await api.get(f"/deployments/{ids[0]}")).json()
        assert detail["target"] == {"kind": "process", "strategy": "recreate"}
        assert (detail["subject"], detail["author"]) == ("Add the till", "Grace Hopper")
        steps = [h["status"] for h in detail["history"]]
        assert (steps[0], steps[-1]) == ("queued", "succeeded"), steps
        assert {"deploying", "checking"} <= set(steps), steps
        assert [h["at"] for h in detail["history"]] == sorted(h["at"] for h in detail["history"])
        assert any(c["outcome"] == "pass" for c in detail["checks"]), detail["checks"]
        # The app's own output (the target's start line too): kept on this machine.
        assert any(detail["version"] in line for line in detail["output"]), detail["output"]
        assert detail["incidents"] == []
        assert_error(await api.get("/deployments/999"), 404, "not_found", "deployment 999")

    try:
        serve(body)
    finally:
        stop_released_processes(tmp_path / "home")


def test_two_releases_compare_with_commits_authors_artifacts_and_checks(
    serve: Serve, repo: GitRepo, tmp_path: Path
) -> None:
    v1 = commit_by(repo, "Ada Lovelace <ada@example.com>", "Ship the shop", shop("v1"))
    commit_by(repo, "Grace Hopper <grace@example.com>", "Fix the basket", shop("v2"))
    commit_by(repo, "Ada Lovelace <ada@example.com>", "Tidy; rm -rf / $(nothing)", shop("v2"))
    v3 = commit_by(repo, "Grace Hopper <grace@example.com>", "Add the till", shop("v3"))
    blog, _ = new_service_repo(tmp_path / "blog", "blog", "Start the blog")

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        await api.register("blog", blog.path)
        old = await ship(api, "shop", v1)
        await serving(api, old)
        new = await ship(api, "shop", v3)
        await serving(api, new)
        other = await ship(api, "blog", "HEAD")

        r = await api.get(f"/releases/{old}/compare/{new}")
        assert r.status_code == 200, r.text
        found = r.json()
        assert (found["service"], found["problem"]) == ("shop", None)
        assert [c["subject"] for c in found["commits"]] == [
            "Add the till",
            "Tidy; rm -rf / $(nothing)",
            "Fix the basket",
        ]
        assert found["commits"][0]["sha"] == v3
        assert found["removed"] == []
        assert [(a["name"], a["commits"]) for a in found["authors"]] == [
            ("Grace Hopper", 2),
            ("Ada Lovelace", 1),
        ]
        for side, release in (("base", old), ("head", new)):
            data = found[side]
            assert data["release"]["id"] == release
            [artifact] = data["built"]["artifacts"]
            assert artifact["path"] == "dist/version.txt"
            assert [j["name"] for j in data["run"]["jobs"]] == ["build"]
            [dep] = data["deployments"]
            assert (dep["environment"], dep["status"]) == ("staging", "succeeded")
            assert [c["outcome"] for c in dep["checks"]][:1] == ["pass"]
        assert (
            found["base"]["built"]["artifacts"][0]["digest"]
            != (found["head"]["built"]["artifacts"][0]["digest"])
        )

        # The other way round: what going back to the old release takes away.
        back = (await api.get(f"/releases/{new}/compare/{old}")).json()
        assert back["commits"] == []
        assert [c["subject"] for c in back["removed"]] == [c["subject"] for c in found["commits"]]
        assert back["authors"] == []

        assert_error(
            await api.get(f"/releases/{old}/compare/{other}"), 400, "bad_request", "one service"
        )
        assert_error(await api.get(f"/releases/{old}/compare/999"), 404, "not_found", "release 999")
        assert_error(await api.get(f"/releases/{old}/compare/x"), 422, "invalid_request")

    try:
        serve(body)
    finally:
        stop_released_processes(tmp_path / "home")
