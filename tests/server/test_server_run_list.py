"""GET /runs as the runs page uses it: real runs of real commits (two services, two branches,
two authors) narrowed by branch, author, time and a search of the subject or sha, paged by
`before`, and bad parameters refused with a clear JSON error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.conftest import GitRepo
from tests.server.conftest import Api, Serve
from tests.server.test_server_api import assert_error, pipeline


def commit_by(repo: GitRepo, author: str, message: str, files: dict[str, str]) -> str:
    for relpath, content in files.items():
        repo.write(relpath, content)
    repo.git("add", "-A")
    repo.git("commit", "-q", "--allow-empty", f"--author={author}", "-m", message)
    return repo.git("rev-parse", "HEAD")


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
    other = GitRepo(tmp_path / "other")
    other.path.mkdir()
    other.git("init", "-q", "-b", "main")
    commit_by(
        other,
        "Ada Lovelace <ada@example.com>",
        "First page",
        pipeline("other", "  check:\n    run: 'true'\n"),
    )

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
