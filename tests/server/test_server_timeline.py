"""The release timeline and the approvals' "you" field through the API, in process: real git
repositories, the real pipeline run, real release processes with real HTTP health checks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.server.conftest import Api, Serve, until

from conveyor.views.timeline import forge_links


def commit(repo: GitRepo, version: str, environments: str, *, healthy: bool = True) -> None:
    repo.commit(
        version,
        {
            "app.py": APP,
            "VERSION": version,
            "HEALTHY": "yes" if healthy else "no",
            "conveyor.yml": f"service: shop\njobs:\n  test:\n    run: 'true'\n"
            f"environments:\n{environments}",
        },
    )


PRODUCTION = f"""\
  production:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""

GATED = f"""\
  production:
    approval: {{ approvers: [ops], required: 1 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""


async def released(api: Api, number: int) -> None:
    run = await api.trigger("shop")
    assert (await api.wait_run(run["id"]))["status"] == "succeeded"

    async def made() -> bool:
        return any(r["id"] == number for r in (await api.get("/releases")).json())

    await until(made, 10, f"release {number}")


def kinds(timeline: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in timeline["entries"]]


@pytest.mark.integration
def test_the_timeline_of_a_release_that_failed_in_production_shows_the_rollback_and_incident(
    serve: Serve, repo: GitRepo
) -> None:
    async def body(api: Api) -> None:
        commit(repo, "v1", PRODUCTION)
        await api.register("shop", repo.path)
        await released(api, 1)

        async def serving(release: int) -> Any:
            [env] = (await api.get("/environments", params={"service": "shop"})).json()
            return (
                env if env["release"] == release and env["healthy"] and not env["queue"] else None
            )

        await until(lambda: serving(1), 30, "production to serve release 1")
        commit(repo, "v2", PRODUCTION, healthy=False)
        await released(api, 2)

        async def restored() -> Any:
            found = (await api.get("/releases/2/timeline")).json()
            entries = found["entries"]
            # The rollback succeeds first; the deployment it undid is marked next.
            done = any(e["kind"] == "rollback" and e["status"] == "succeeded" for e in entries)
            undone = any(
                e["kind"] == "deployment" and e["status"] == "rolled_back" for e in entries
            )
            return found if done and undone else None

        timeline = await until(restored, 30, "the rollback of release 2")
        assert timeline["release"]["version"].startswith("r2-")
        assert timeline["release"]["environments"] == []  # release 1 serves again
        assert kinds(timeline)[:3] == ["commit", "run", "release"]

        first = timeline["entries"][0]
        assert (first["subject"], first["author"], first["committer"]) == (
            "v2",
            "Ada Author",
            "Ada Author",
        )
        assert first["links"] is None  # a local repository: no forge to link to
        run = timeline["entries"][1]
        assert run["status"] == "succeeded"
        assert [(j["name"], j["status"]) for j in run["jobs"]] == [("test", "succeeded")]
        assert run["jobs"][0]["duration"] is not None

        [deployment] = [e for e in timeline["entries"] if e["kind"] == "deployment"]
        assert (deployment["environment"], deployment["status"]) == ("production", "rolled_back")
        failed = [c for c in deployment["checks"] if c["outcome"] == "fail"]
        assert failed
        assert "503" in failed[0]["detail"]

        [rollback] = [e for e in timeline["entries"] if e["kind"] == "rollback"]
        assert rollback["automatic"] is True
        assert rollback["release"] == 1
        assert rollback["undid"]["deployment"] == deployment["deployment"]
        assert "503" in rollback["why"]

        [incident] = [e for e in timeline["entries"] if e["kind"] == "incident"]
        assert incident["deployment"] == deployment["deployment"]
        await until(
            lambda: _resolved(api),
            20,
            "the incident to be resolved by the rollback",
        )
        resolved = (await api.get("/releases/2/timeline")).json()
        [incident] = [e for e in resolved["entries"] if e["kind"] == "incident"]
        assert incident["status"] == "resolved"
        assert incident["recovery_seconds"] is not None
        assert incident["recovery_seconds"] >= 0

        times = [dt.datetime.fromisoformat(e["at"]) for e in resolved["entries"]]
        assert times == sorted(times)

        one = (await api.get("/releases/1/timeline")).json()
        assert one["release"]["environments"] == ["production"]
        deployments = [e for e in one["entries"] if e["kind"] == "deployment"]
        assert [d["status"] for d in deployments] == ["succeeded"]
        assert {c["outcome"] for c in deployments[0]["checks"]} == {"pass"}

        missing = await api.get("/releases/99/timeline")
        assert missing.status_code == 404
        assert "no release 99" in missing.json()["error"]["message"]
        reader = api.token("read")
        assert (await api.get("/releases/1/timeline", token=reader)).status_code == 200
        nobody = await api.client.get("/api/v1/releases/1/timeline")
        assert nobody.status_code == 401

    try:
        serve(body)
    finally:
        stop_released_processes(repo.path.parent / "home")


async def _resolved(api: Api) -> bool:
    return any(i["status"] == "resolved" for i in (await api.get("/incidents")).json())


@pytest.mark.integration
def test_each_approval_says_whether_the_caller_may_decide_it_and_the_server_holds_to_it(
    serve: Serve, repo: GitRepo
) -> None:
    async def body(api: Api) -> None:
        # The commit's author is Ada Author <ada@example.com> (tests.conftest.GIT_ENV).
        for name, groups, emails in (
            ("olga", ["ops"], []),
            ("ann", ["ops"], ["ada@example.com"]),
            ("bob", [], []),
        ):
            r = await api.post("/users", {"name": name, "groups": groups, "emails": emails})
            assert r.status_code == 201, r.text
        commit(repo, "v1", GATED)
        await api.register("shop", repo.path)
        await released(api, 1)

        async def pending() -> Any:
            found = (await api.get("/approvals")).json()
            return found[0] if found else None

        approval = await until(pending, 30, "the approval request")
        number = approval["id"]
        assert approval["rule"] == "1 of group ops"
        assert approval["commit"]["subject"] == "v1"
        assert approval["commit"]["author"] == "Ada Author"

        tokens = {
            "olga": api.token("approve", user="olga"),
            "ann": api.token("approve", user="ann"),
            "bob": api.token("approve", user="bob"),
            "reader": api.token("read", user="olga"),
            "nobody": api.token("approve"),
            "stranger": api.token("approve", user="zed"),
        }

        async def you(who: str) -> dict[str, Any]:
            [row] = (await api.get("/approvals", token=tokens[who])).json()
            answer: dict[str, Any] = row["you"]
            return answer

        assert await you("olga") == {"may_decide": True, "reason": None}
        sha = repo.git("rev-parse", "--short=7", "HEAD")
        assert (await you("ann"))["reason"] == (
            f"you authored {sha} in the range being deployed: no self-approval (unless the "
            "approval says self_approval: true)"
        )
        assert (await you("bob"))["reason"] == "you are not among the approvers (ops)"
        assert (await you("reader"))["reason"] == "your session has no approve scope"
        assert (await you("nobody"))["reason"] == "you are signed in with a token without a user"
        assert "not known to this server" in (await you("stranger"))["reason"]
        assert not any([(await you(w))["may_decide"] for w in ("ann", "bob", "reader", "nobody")])

        # Bypassing the page changes nothing: the server refuses with its own message.
        r = await api.post(f"/approvals/{number}/approve", {}, token=tokens["ann"])
        assert r.status_code == 403
        assert r.json()["error"]["message"].startswith(f"ann authored {sha} in the range")
        r = await api.post(f"/approvals/{number}/approve", {}, token=tokens["bob"])
        assert r.status_code == 403
        assert "not an approver" in r.json()["error"]["message"]
        r = await api.post(f"/approvals/{number}/approve", {}, token=tokens["reader"])
        assert r.status_code == 403
        r = await api.post(f"/approvals/{number}/reject", {"reason": " "}, token=tokens["olga"])
        assert r.status_code == 400
        assert "needs a reason" in r.json()["error"]["message"]

        r = await api.post(f"/approvals/{number}/approve", {"reason": "ok"}, token=tokens["olga"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        again = await api.post(f"/approvals/{number}/approve", {}, token=tokens["olga"])
        assert again.status_code == 409
        assert "already" in again.json()["error"]["message"]

        [closed] = (
            await api.get("/approvals", params={"all": "true"}, token=tokens["olga"])
        ).json()
        assert closed["you"] == {"may_decide": False, "reason": "this approval is already approved"}

        async def live() -> bool:
            entries = (await api.get("/releases/1/timeline")).json()["entries"]
            return any(e["kind"] == "deployment" and e["status"] == "succeeded" for e in entries)

        await until(live, 30, "release 1 to reach production")
        entries = (await api.get("/releases/1/timeline")).json()["entries"]
        [gate] = [e for e in entries if e["kind"] == "approval"]
        assert gate["status"] == "approved"
        assert [(d["user"], d["decision"], d["reason"]) for d in gate["decisions"]] == [
            ("olga", "approve", "ok")
        ]

    try:
        serve(body)
    finally:
        stop_released_processes(repo.path.parent / "home")


@pytest.mark.parametrize(
    ("repository", "forge", "expected"),
    [
        ("https://github.com/acme/shop.git", None, "https://github.com/acme/shop/commit/abc"),
        ("git@github.com:acme/shop.git", None, "https://github.com/acme/shop/commit/abc"),
        ("https://gitlab.com/g/sub/shop", None, "https://gitlab.com/g/sub/shop/-/commit/abc"),
        ("http://git.internal/team/shop.git", "gitea", "http://git.internal/team/shop/commit/abc"),
        ("https://git.internal/team/shop.git", None, None),
        ("/srv/git/shop", "github", None),
    ],
)
def test_commit_links_follow_each_forges_url_pattern_and_are_left_out_when_unknown(
    repository: str, forge: str | None, expected: str | None
) -> None:
    links = forge_links(repository, forge, "abc", "def")
    assert (links or {}).get("commit") == expected
    if links:
        assert links["compare"].endswith("def...abc")
