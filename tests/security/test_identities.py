"""Identities that cannot be forged (issue 12, item 4), against the server in-process with real
git repositories: the pusher is whoever the token belongs to, whatever the hook's body says;
an approval excludes the author, committer (by name and by e-mail) and pusher of every commit
between what the environment serves and the release, so a change cannot be slipped under
someone else's commit, nor past a cancelled release."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import GitRepo
from tests.security.scene import (
    ADA,
    OLGA,
    RULE,
    SAM,
    approve,
    commit_as,
    deliver,
    new_repo,
    people,
    release_of,
    serving,
    short,
    token,
    waiting_approval,
)
from tests.server.conftest import Api, Serve, serve, until

ZERO = "0" * 40
__all__ = ["serve"]  # the in-process server fixture of tests/server, used here too


async def production_serves_a_first_release(api: Api, repo: GitRepo, carl: str) -> None:
    """Register shop, release its first commit (Ada's) and have carl approve it."""
    await api.register("shop", repo.path)
    release = await deliver(api, "shop", repo.git("rev-parse", "HEAD"))
    approval = await waiting_approval(api, release["id"])
    assert await approve(api, approval["id"], carl) == (200, "approved")
    await serving(api, "shop", "production", release["id"])


def test_a_pusher_named_in_the_hook_body_is_ignored_for_the_tokens_user(
    serve: Serve, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path / "shop", "shop")

    async def body(api: Api) -> None:
        await people(api)
        await api.register("shop", repo.path)
        sam = token(api, "sam-cli", "trigger", "approve", user="sam")
        sha = repo.git("rev-parse", "HEAD")  # Ada's commit: sam only pushes it
        push = {"repository": str(repo.path), "ref": "refs/heads/main", "before": ZERO}
        r = await api.post("/hooks/git", push | {"after": sha, "pusher": "release-bot"}, token=sam)
        assert r.status_code == 202, r.text
        release = await release_of(api, "shop", sha)

        commit = (await api.get(f"/releases/{release['id']}/timeline")).json()["entries"][0]
        assert (commit["kind"], commit["pusher"], commit["pusher_via"]) == (
            "commit",
            "sam",
            "token sam-cli",
        )
        # The pusher is who approvals exclude: the claim of "release-bot" let sam through.
        approval = await waiting_approval(api, release["id"])
        assert await approve(api, approval["id"], sam) == (
            403,
            f"sam pushed {short(sha)} {RULE}",
        )
        [row] = (await api.get("/approvals", token=sam)).json()
        assert row["you"] == {"may_decide": False, "reason": f"you pushed {short(sha)} {RULE}"}

        # A hook's own token has no user: the pusher it names is kept, as its claim.
        r = await api.post("/hook-tokens", {"repository": str(repo.path)})
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["services"] == ["shop"]
        later = commit_as(repo, "later", ADA)
        r = await api.post(
            "/hooks/git",
            push | {"before": sha, "after": later, "pusher": "sam"},
            token=hook["token"],
        )
        assert r.status_code == 202, r.text
        second = await release_of(api, "shop", later)
        commit = (await api.get(f"/releases/{second['id']}/timeline")).json()["entries"][0]
        assert (commit["pusher"], commit["pusher_via"]) == (
            "sam",
            f"claimed by token {hook['name']}",
        )

    serve(body)


def test_a_commit_under_someone_elses_cannot_be_approved_by_its_author(
    serve: Serve, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path / "shop", "shop")

    async def body(api: Api) -> None:
        await people(api)
        carl = token(api, "carl", "approve", user="carl")
        sam = token(api, "sam", "approve", user="sam")
        olga = token(api, "olga", "approve", user="olga")
        await production_serves_a_first_release(api, repo, carl)

        a = commit_as(repo, "A: sam's change", SAM)
        b = commit_as(repo, "B: olga's change on top", OLGA)
        release = await deliver(api, "shop", b)  # the release's own commit is olga's
        approval = await waiting_approval(api, release["id"])

        assert await approve(api, approval["id"], sam) == (403, f"sam authored {short(a)} {RULE}")
        assert await approve(api, approval["id"], olga) == (
            403,
            f"olga authored {short(b)} {RULE}",
        )
        # The approvals page says the same before anyone presses a button.
        [row] = (await api.get("/approvals", token=sam)).json()
        assert row["you"] == {"may_decide": False, "reason": f"you authored {short(a)} {RULE}"}
        [row] = (await api.get("/approvals", token=carl)).json()
        assert row["you"] == {"may_decide": True, "reason": None}

        assert await approve(api, approval["id"], carl) == (200, "approved")
        await serving(api, "shop", "production", release["id"])
        refusals = [e for e in (await api.get("/audit")).json() if e["type"] == "approval.refused"]
        assert {e["actor"] for e in refusals} == {"sam", "olga"}

    serve(body)


def test_the_committer_is_matched_by_e_mail_whatever_name_they_commit_under(
    serve: Serve, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path / "shop", "shop")

    async def body(api: Api) -> None:
        await people(api)
        carl = token(api, "carl", "approve", user="carl")
        sam = token(api, "sam", "approve", user="sam")
        await production_serves_a_first_release(api, repo, carl)

        # Authored as a bot, committed by sam under another name: only his e-mail gives him away.
        a = commit_as(repo, "bump", ("Release Bot", "bot@example.com"), ("Build Box", SAM[1]))
        release = await deliver(api, "shop", a)
        approval = await waiting_approval(api, release["id"])
        assert await approve(api, approval["id"], sam) == (
            403,
            f"sam committed {short(a)} {RULE}",
        )
        assert await approve(api, approval["id"], carl) == (200, "approved")

    serve(body)


def test_cancelling_a_release_does_not_let_its_author_approve_the_next_one(
    serve: Serve, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path / "shop", "shop")

    async def body(api: Api) -> None:
        await people(api)
        carl = token(api, "carl", "approve", user="carl")
        sam = token(api, "sam", "trigger", "approve", user="sam")
        await production_serves_a_first_release(api, repo, carl)

        a = commit_as(repo, "A: sam's change", SAM)
        first = await deliver(api, "shop", a)
        waiting = await waiting_approval(api, first["id"])
        r = await api.post(f"/deployments/{waiting['deployment']}/cancel", token=sam)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"

        b = commit_as(repo, "B: olga's change", OLGA)
        second = await deliver(api, "shop", b)
        approval = await waiting_approval(api, second["id"])
        # Counted from what production serves, not from the cancelled release: A is in it.
        assert await approve(api, approval["id"], sam) == (403, f"sam authored {short(a)} {RULE}")

        async def withdrawn() -> bool:
            rows = (await api.get("/approvals", params={"all": "true"})).json()
            return any(r["id"] == waiting["id"] and r["status"] == "withdrawn" for r in rows)

        await until(withdrawn, 10, "the cancelled release's approval to be withdrawn")
        assert await approve(api, approval["id"], carl) == (200, "approved")
        await serving(api, "shop", "production", second["id"])

    serve(body)
