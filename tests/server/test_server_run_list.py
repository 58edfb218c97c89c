"""GET /runs and GET /releases as the list pages use them: real runs of real commits (two
services, two branches, two authors) narrowed by branch, author, time and a search of the
subject or sha, releases by the environment they served in (a real deployment), both paged by
`before` and back by `after`, and bad parameters refused with a clear JSON error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.delivery.harness import pipeline as staged_pipeline
from tests.server.conftest import Api, Serve, until
from tests.server.test_server_api import assert_error, pipeline


def commit_by(repo: GitRepo, author: str, message: str, files: dict[str, str]) -> str:
    for relpath, content in files.items():
        repo.write(relpath, content)
    repo.git("add", "-A")
    repo.git("commit", "-q", "--allow-empty", f"--author={author}", "-m", message)
    return repo.git("rev-parse", "HEAD")


def new_service_repo(path: Path, service: str, message: str) -> tuple[GitRepo, str]:
    """A repository at `path` whose first commit (by Ada) runs a pipeline that passes."""
    repo = GitRepo(path)
    path.mkdir()
    repo.git("init", "-q", "-b", "main")
    first = commit_by(
        repo,
        "Ada Lovelace <ada@example.com>",
        message,
        pipeline(service, "  check:\n    run: 'true'\n"),
    )
    return repo, first


def test_runs_are_narrowed_by_branch_author_time_and_search_and_paged(
    serve: Serve, repo: GitRepo, tmp_path: Path
) -> None:
    main_sha = commit_by(
        repo,
        "Ada Lovelace <ada@example.com>",
        "Add the login form",
        pipeline("svc", "  check:\n    run: 'true'\n"),
    )
    repo.git("checkout", "-q", "-b", "feature")
    feature_sha = commit_by(
        repo,
        "Grace Hopper <grace@example.com>",
        "Fix the 100% cache bug",
        pipeline("svc", "  check:\n    run: 'false'\n"),
    )
    other, _ = new_service_repo(tmp_path / "other", "other", "First page")

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        await api.register("other", other.path)
        before_any = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        ids = [
            (await api.trigger(service, rev, ref=f"refs/heads/{branch}"))["id"]
            for service, rev, branch in (
                ("svc", main_sha, "main"),
                ("svc", feature_sha, "feature"),
                ("other", "HEAD", "main"),
            )
        ]
        for run_id in ids:
            await api.wait_run(run_id)
        a, b, c = ids

        async def listed(**params: Any) -> list[int]:
            r = await api.get("/runs", params=params)
            assert r.status_code == 200, r.text
            return [run["id"] for run in r.json()]

        assert await listed() == [c, b, a]
        assert await listed(branch="feature") == [b]
        assert await listed(branch="refs/heads/main") == [c, a]
        assert await listed(branch="main", service="svc") == [a]
        # Part of the author's name, in any case.
        assert await listed(author="ada") == [c, a]
        assert await listed(author="HOPPER") == [b]
        # The subject, or a sha prefix as copied (in capitals, too); % is a character here.
        assert await listed(q="login") == [a]
        assert await listed(q="100%") == [b]
        assert await listed(q="%") == [b]
        assert await listed(q=feature_sha[:8].upper()) == [b]
        assert await listed(q="zzz") == []
        assert await listed(since=before_any.isoformat()) == [c, b, a]
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert await listed(since=later) == []
        assert await listed(service="svc", status="failed", author="grace") == [b]
        assert await listed(status="succeeded", author="grace") == []

        # Keyset paging: each page starts after the last id of the one before.
        assert await listed(limit=2) == [c, b]
        assert await listed(limit=2, before=b) == [a]
        assert await listed(limit=2, before=a) == []
        assert await listed(author="ada", limit=1, before=c) == [a]
        # Back by `after`: the page just newer than an id, still newest first.
        assert await listed(limit=1, after=a) == [b]
        assert await listed(limit=2, after=a) == [c, b]
        assert await listed(limit=2, after=c) == []
        assert await listed(author="ada", limit=5, after=a) == [c]

        async def refused(params: dict[str, Any], *words: str) -> None:
            assert_error(await api.get("/runs", params=params), 422, "invalid_request", *words)

        await refused({"status": "green"}, "status", "succeeded")
        await refused({"since": "yesterday"}, "since")
        await refused({"since": "2026-12-01T00:00:00"}, "since", "timezone")
        await refused({"before": 0}, "before")
        await refused({"before": "abc"}, "before")
        await refused({"limit": 1001}, "limit")
        await refused({"q": "x" * 201}, "q")
        await refused({"author": "x" * 201}, "author")

    serve(body)


# shop, deployed to staging by the process target.
STAGED = staged_pipeline(
    f"staging:\n  deploy: {{ target: process, start: python3 app.py }}\n  {HEALTH}"
)


def test_releases_are_narrowed_by_service_environment_time_and_search_and_paged(
    serve: Serve, repo: GitRepo, tmp_path: Path
) -> None:
    commit_by(
        repo,
        "Grace Hopper <grace@example.com>",
        "Ship the shop",
        {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": STAGED},
    )
    blog, first = new_service_repo(tmp_path / "blog", "blog", "Start the blog")
    second = commit_by(blog, "Ada Lovelace <ada@example.com>", "Add an about page", {})

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        await api.register("blog", tmp_path / "blog")
        before_any = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        for service, rev in (("shop", "HEAD"), ("blog", first), ("blog", second)):
            run = await api.trigger(service, rev, ref="refs/heads/main")
            assert (await api.wait_run(run["id"]))["status"] == "succeeded"

        async def listed(**params: Any) -> list[tuple[str, str | None]]:
            r = await api.get("/releases", params=params)
            assert r.status_code == 200, r.text
            return [(release["service"], release["subject"]) for release in r.json()]

        shop, start, about = (
            ("shop", "Ship the shop"),
            ("blog", "Start the blog"),
            (
                "blog",
                "Add an about page",
            ),
        )
        assert await listed() == [about, start, shop]
        assert await listed(service="blog") == [about, start]

        async def staged() -> list[tuple[str, str | None]]:
            return await listed(environment="staging")

        assert await until(staged, 30, "the shop's release to serve in staging") == [shop]
        assert await listed(environment="production") == []
        assert await listed(author="lovelace") == [about, start]
        assert await listed(q="about") == [about]
        assert await listed(q=second[:10]) == [about]
        assert await listed(branch="main", service="shop") == [shop]
        assert await listed(since=before_any.isoformat()) == [about, start, shop]
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert await listed(since=later) == []
        ids = [r["id"] for r in (await api.get("/releases")).json()]
        assert await listed(limit=1, before=ids[0]) == [start]
        assert await listed(limit=5, before=ids[-1]) == []
        assert await listed(limit=1, after=ids[-1]) == [start]

        async def refused(params: dict[str, Any], *words: str) -> None:
            r = await api.get("/releases", params=params)
            assert_error(r, 422, "invalid_request", *words)

        await refused({"before": -1}, "before")
        await refused({"since": "2026-12-01 10:00"}, "since", "timezone")
        await refused({"environment": "e" * 201}, "environment")
        await refused({"limit": 0}, "limit")

    try:
        serve(body)
    finally:
        stop_released_processes(tmp_path / "home")
