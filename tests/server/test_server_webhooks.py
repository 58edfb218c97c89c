"""Changes coming in over HTTP: signed push webhooks from GitHub, Gitea and GitLab, and the local
git hook. Each accepted delivery is recorded, then turned into a run of the pushed commit by the
server's intake loop; refused ones leave no trace."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import GitRepo
from tests.server.conftest import API, Api, Serve, until

from conveyor.forges.gitea import sign_gitea
from conveyor.forges.github import sign_github
from conveyor.server.app import ServerConfig
from conveyor.server.hooks import UNSIGNED
from conveyor.store.models import Delivery, Event, Run

PAYLOADS = Path(__file__).parent.parent / "forges" / "fixtures"
PIPELINE = """\
service: svc
on:
  push: { branches: [main] }
jobs:
  build:
    run: echo "built $CONVEYOR_SHA on $CONVEYOR_BRANCH"
"""


def payload(name: str) -> dict[str, Any]:
    forge, _, kind = name.partition("_")
    data: dict[str, Any] = json.loads((PAYLOADS / forge / f"{kind}.json").read_text())
    return data


def github_push(after: str, before: str, ref: str = "refs/heads/main") -> bytes:
    """GitHub's push payload, as recorded, for a push of `after` to `ref`."""
    data = payload("github_push")
    data.update(ref=ref, before=before, after=after)
    data["commits"][-1]["id"] = data["head_commit"]["id"] = after
    return json.dumps(data).encode()


def github_headers(secret: str | None, body: bytes, *, event: str = "push") -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "109948940",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign_github(secret, body)
    return headers


async def deliver(
    api: Api, forge: str, service: str, body: bytes | Any, headers: dict[str, str]
) -> httpx.Response:
    return await api.client.post(f"{API}/hooks/{forge}/{service}", headers=headers, content=body)


async def setup(api: Api, repo: GitRepo, **extra: Any) -> str:
    """Register `svc` for `repo` with a generated webhook secret; returns the secret."""
    data = await api.register("svc", repo.path, generate_webhook_secret=True, **extra)
    secret: str = data["webhook_secret"]
    return secret


async def processed(api: Api, count: int = 1) -> list[Delivery]:
    """The deliveries, once the intake loop has dealt with `count` of them."""

    async def done() -> list[Delivery] | None:
        rows = api.deliveries()
        finished = [d for d in rows if d.status not in ("received", "claimed")]  # claimed: in hand
        return rows if len(finished) >= count else None

    rows: list[Delivery] = await until(done, what=f"{count} deliveries to be processed")
    return rows


async def only_run(api: Api) -> dict[str, Any]:
    async def listed() -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = (await api.get("/runs")).json()
        return runs

    [run] = await until(listed, what="a run to appear")
    return await api.wait_run(run["id"])


@pytest.fixture
def pushed(repo: GitRepo) -> tuple[str, str]:
    """A repository with two commits on main; returns (parent sha, head sha)."""
    first = repo.commit("first", {"conveyor.yml": PIPELINE})
    return first, repo.commit("second", {"README": "hello\n"})


# --- services and their secret -----------------------------------------------------------------


def test_a_generated_webhook_secret_is_shown_once(serve: Serve, repo: GitRepo) -> None:
    async def body(api: Api) -> None:
        r = await api.post(
            "/services",
            {"name": "svc", "repository": str(repo.path), "generate_webhook_secret": True},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["webhook_secret"]
        assert len(secret) >= 32
        assert created["signed_webhooks"] is True

        listed = await api.get("/services")
        assert listed.status_code == 200
        assert [s["name"] for s in listed.json()] == ["svc"]
        assert "webhook_secret" not in listed.json()[0]
        assert listed.json()[0]["signed_webhooks"] is True
        assert secret not in listed.text

        # Updating other settings keeps the secret, and does not show it again.
        r = await api.post("/services", {"name": "svc", "repository": str(repo.path)})
        assert r.status_code == 201, r.text
        assert "webhook_secret" not in r.json()
        assert r.json()["signed_webhooks"] is True
        assert secret not in (await api.get("/services")).text

        r = await api.post(
            "/services",
            {"name": "bad", "repository": str(repo.path), "webhook_secret": "short"},
        )
        assert r.status_code == 422
        assert "webhook_secret" in r.json()["error"]["message"]

    serve(body)


def test_a_new_webhook_secret_takes_effect_at_once(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    before, after = pushed
    old, new = "old-secret-0123456789", "new-secret-0123456789"

    async def body(api: Api) -> None:
        await api.register("svc", repo.path, webhook_secret=old)
        data = github_push(after, before)
        r = await deliver(api, "github", "svc", data, github_headers(old, data))
        assert r.status_code == 202, r.text

        await api.register("svc", repo.path, webhook_secret=new)
        data = github_push(after, before, ref="refs/heads/other")
        r = await deliver(api, "github", "svc", data, github_headers(new, data))
        assert r.status_code == 202, r.text
        r = await deliver(api, "github", "svc", data, github_headers(old, data))
        assert r.status_code == 401, r.text

        # A service registered after a delivery for it was refused is found at once, too.
        r = await deliver(api, "github", "late", data, github_headers(new, data))
        assert r.status_code == 401, r.text
        await api.register("late", repo.path, webhook_secret=new)
        r = await deliver(api, "github", "late", data, github_headers(new, data))
        assert r.status_code == 202, r.text

        rows = await processed(api, 3)
        assert [(d.service, d.status) for d in rows] == [
            ("svc", "queued"),
            ("svc", "ignored"),  # refs/heads/other is not in on.push.branches
            ("late", "ignored"),  # neither here; and late's file names service svc anyway
        ]
        assert (await only_run(api))["status"] == "succeeded"

    serve(body)


# --- GitHub ------------------------------------------------------------------------------------


def test_a_signed_github_push_runs_the_pushed_commit_once(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    before, after = pushed

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        data = github_push(after, before)
        headers = github_headers(secret, data)
        delivery = headers["X-GitHub-Delivery"]

        r = await deliver(api, "github", "svc", data, headers)
        assert r.status_code == 202, r.text
        assert r.json() == {"status": "accepted", "delivery": delivery}

        run = await only_run(api)
        assert (run["sha"], run["ref"], run["trigger"]) == (after, "refs/heads/main", "github")
        assert run["status"] == "succeeded"
        assert run["subject"] == "second"  # read from the repository, not from the payload
        assert await api.logs(run["id"]) == [f"built {after} on main"]
        [row] = await processed(api)
        assert (row.source, row.delivery_id, row.status, row.run_id) == (
            "github",
            delivery,
            "queued",
            run["id"],
        )
        assert row.payload["pusher"] == "Codertocat"

        # A replay of the same delivery id: refused (409, JSON error), nothing new stored.
        r = await deliver(api, "github", "svc", data, headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "duplicate_delivery"
        assert r.json()["delivery"] == delivery
        assert api.count(Delivery) == 1
        assert api.count(Event, Event.type == "change.received") == 1
        assert len((await api.get("/runs")).json()) == 1

    serve(body)


def test_deliveries_without_a_valid_signature_leave_no_trace(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    before, after = pushed

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        data = github_push(after, before)

        cases = {
            "invalid signature": github_headers("not-the-secret-at-all", data),
            "missing signature": github_headers(None, data),
        }
        resigned = github_headers(secret, data.replace(b"refs/heads/main", b"refs/heads/evil"))
        cases["invalid signature "] = resigned  # a signature of another body
        truncated = github_headers(secret, data)
        truncated["X-Hub-Signature-256"] = truncated["X-Hub-Signature-256"][:-1]
        cases[" invalid signature"] = truncated
        for message, headers in cases.items():
            r = await deliver(api, "github", "svc", data, headers)
            assert r.status_code == 401, (message, r.text)
            # One answer for every way of failing (the server's log says which it was).
            assert r.json()["error"] == {"code": "unauthorized", "message": UNSIGNED}

        gitea = payload("gitea_push") | {"ref": "refs/heads/main", "after": after}
        gitea_body = json.dumps(gitea).encode()
        r = await deliver(
            api,
            "gitea",
            "svc",
            gitea_body,
            {"X-Gitea-Event": "push", "X-Gitea-Signature": sign_gitea("wrong", gitea_body)},
        )
        assert r.status_code == 401, r.text
        gitlab_body = json.dumps(payload("gitlab_push")).encode()
        for token in ("wrong", ""):
            r = await deliver(
                api,
                "gitlab",
                "svc",
                gitlab_body,
                {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": token},
            )
            assert r.status_code == 401, r.text
        api.nothing_received()

    serve(body)


def test_malformed_oversized_and_misaddressed_deliveries_are_refused(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    before, after = pushed

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        limit = api.config.webhook_max_bytes

        async def signed(data: bytes, **kw: Any) -> httpx.Response:
            return await deliver(api, "github", "svc", data, github_headers(secret, data, **kw))

        r = await signed(b'{"ref": "refs/heads/main", ')
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "body is not valid JSON"
        r = await signed(b"[1, 2, 3]")
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "body is not a JSON object"
        data = json.loads(github_push(after, before))
        data["after"] = "HEAD"
        r = await signed(json.dumps(data).encode())
        assert r.status_code == 400
        assert "'after'" in r.json()["error"]["message"]

        oversized = json.loads(github_push(after, before))
        oversized["padding"] = "x" * limit
        big = json.dumps(oversized).encode()
        r = await signed(big)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 4096):
                yield big[start : start + 4096]

        r = await deliver(api, "github", "svc", chunks(), github_headers(secret, big))
        assert r.status_code == 413, r.text

        push = github_push(after, before)
        r = await deliver(api, "github", "nope", push, github_headers(secret, push))
        assert r.status_code == 401  # as a wrong signature: which services exist is not told
        assert r.json()["error"] == {"code": "unauthorized", "message": UNSIGNED}
        r = await deliver(api, "bitbucket", "svc", push, github_headers(secret, push))
        assert r.status_code == 404
        api.nothing_received()

    serve(body, ServerConfig(runner_slots=2, webhook_max_bytes=16_384))


def test_pings_and_pushes_that_are_not_for_ci_make_no_run(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    _, after = pushed
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit("feature work")

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        ping = json.dumps(payload("github_ping")).encode()
        r = await deliver(api, "github", "svc", ping, github_headers(secret, ping, event="ping"))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "ignored"
        api.nothing_received()

        tag = payload("github_tag_push") | {"after": after}
        deleted = payload("github_branch_delete") | {"before": after}
        pushes = [
            github_push(feature, after, ref="refs/heads/feature"),
            json.dumps(tag).encode(),
            json.dumps(deleted).encode(),
        ]
        for data in pushes:
            r = await deliver(api, "github", "svc", data, github_headers(secret, data))
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "accepted"
        rows = await processed(api, len(pushes))
        assert [(d.status, d.reason, d.run_id) for d in rows] == [
            ("ignored", "branch feature is not in on.push.branches", None),
            ("ignored", f"{tag['ref']} is not a branch", None),
            ("ignored", f"{deleted['ref']} was deleted", None),
        ]
        assert api.count(Run) == 0
        assert (await api.get("/runs")).json() == []

    serve(body)


def test_branch_names_are_carried_as_data(
    serve: Serve, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parent = repo.commit("pipeline", {"conveyor.yml": PIPELINE.replace("[main]", "['main*']")})
    sha = repo.commit("change")
    refs = ["refs/heads/main;touch pwned", "refs/heads/main$(touch pwned)`touch pwned`"]

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        for ref in refs:
            data = github_push(sha, parent, ref=ref)
            r = await deliver(api, "github", "svc", data, github_headers(secret, data))
            assert r.status_code == 202, r.text
        rows = await processed(api, 2)
        assert [d.payload["ref"] for d in rows] == refs
        assert [d.status for d in rows] == ["queued", "queued"]
        for row, ref in zip(rows, refs, strict=True):
            assert row.run_id is not None
            run = await api.wait_run(row.run_id)
            assert (run["ref"], run["status"]) == (ref, "succeeded")
            branch = ref.removeprefix("refs/heads/")
            assert await api.logs(run["id"]) == [f"built {sha} on {branch}"]
        for root in (tmp_path, Path.cwd(), Path.home(), Path("/tmp")):
            assert not (root / "pwned").exists(), root
        assert not list(tmp_path.rglob("pwned*"))

    serve(body)


def test_a_push_with_an_invalid_pipeline_file_is_a_failed_run(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    _, parent = pushed
    broken = PIPELINE.replace("    run:", "    ruun:")
    line = broken.splitlines().index('    ruun: echo "built $CONVEYOR_SHA on $CONVEYOR_BRANCH"') + 1
    sha = repo.commit("broken", {"conveyor.yml": broken})

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        data = github_push(sha, parent)
        r = await deliver(api, "github", "svc", data, github_headers(secret, data))
        assert r.status_code == 202, r.text
        run = await only_run(api)
        assert (run["sha"], run["status"], run["jobs"]) == (sha, "failed", [])
        assert run["reason"].startswith("the pipeline file is invalid: ")
        assert f"conveyor.yml@{sha[:7]}:{line}" in run["reason"], run["reason"]
        assert "ruun" in run["reason"]
        [row] = await processed(api)
        assert (row.status, row.run_id) == ("queued", run["id"])

        # Asked for directly, the same commit is refused with the same explanation.
        r = await api.post("/runs", {"service": "svc", "rev": sha})
        assert r.status_code == 400
        assert f"conveyor.yml@{sha[:7]}:{line}" in r.json()["error"]["message"]
        r = await api.post(f"/runs/{run['id']}/rerun", {})
        assert r.status_code == 400
        assert "no jobs" in r.json()["error"]["message"]

    serve(body)


# --- Gitea and GitLab --------------------------------------------------------------------------


def test_gitea_and_gitlab_pushes_trigger_runs(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str]
) -> None:
    before, after = pushed
    later = repo.commit("third")  # one push per forge: the same push twice makes one run

    async def body(api: Api) -> None:
        secret = await setup(api, repo)
        gitea = payload("gitea_push") | {"ref": "refs/heads/main", "before": before}
        gitea |= {"after": after}
        gitea["commits"][0]["id"] = after
        gitea_body = json.dumps(gitea).encode()
        r = await deliver(
            api,
            "gitea",
            "svc",
            gitea_body,
            {
                "Content-Type": "application/json",
                "X-Gitea-Event": "push",
                "X-Gitea-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
                "X-Gitea-Signature": sign_gitea(secret, gitea_body),
            },
        )
        assert r.status_code == 202, r.text

        gitlab = payload("gitlab_push") | {"ref": "refs/heads/main", "before": after}
        gitlab |= {"after": later, "checkout_sha": later}
        gitlab_body = json.dumps(gitlab).encode()
        r = await deliver(
            api,
            "gitlab",
            "svc",
            gitlab_body,
            {
                "Content-Type": "application/json",
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": secret,
                "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
            },
        )
        assert r.status_code == 202, r.text

        rows = await processed(api, 2)
        assert [(d.source, d.status) for d in rows] == [("gitea", "queued"), ("gitlab", "queued")]
        for row, sha in zip(rows, (after, later), strict=True):
            assert row.run_id is not None
            run = await api.wait_run(row.run_id)
            assert (run["sha"], run["ref"]) == (sha, "refs/heads/main")
            assert (run["status"], run["trigger"]) == ("succeeded", row.source)
        assert [d.payload["pusher"] for d in rows] == ["gitea", "jsmith"]

    serve(body)


# --- the local git hook ------------------------------------------------------------------------


def test_the_git_hook_queues_a_run_for_a_registered_repository(
    serve: Serve, repo: GitRepo, pushed: tuple[str, str], tmp_path: Path
) -> None:
    before, after = pushed

    async def body(api: Api) -> None:
        await api.register("svc", repo.path)
        trigger, read = api.token("trigger", user="ada"), api.token("read")
        push = {"repository": str(repo.path), "ref": "refs/heads/main"}
        push |= {"before": before, "after": after}

        unknown = push | {"repository": str(tmp_path / "elsewhere")}
        r = await api.post("/hooks/git", unknown, token=trigger)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
        assert "no service is registered" in r.json()["error"]["message"]
        r = await api.post("/hooks/git", push, token=read)
        assert r.status_code == 403, r.text
        assert (await api.client.post(f"{API}/hooks/git", json=push)).status_code == 401
        r = await api.post("/hooks/git", push | {"after": "HEAD"}, token=trigger)
        assert r.status_code == 422, r.text
        api.nothing_received()

        # The path as the hook may spell it (trailing "/."), resolved to the registered one.
        r = await api.post("/hooks/git", push | {"repository": f"{repo.path}/."}, token=trigger)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "accepted"
        run = await only_run(api)
        assert (run["sha"], run["ref"], run["trigger"], run["status"]) == (
            after,
            "refs/heads/main",
            "git",
            "succeeded",
        )
        [row] = await processed(api)
        assert (row.source, row.status, row.run_id) == ("git", "queued", run["id"])
        assert row.payload["pusher"] == "ada"

        r = await api.post("/hooks/git", push | {"repository": f"{repo.path}/."}, token=trigger)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "duplicate"
        assert api.count(Delivery) == 1
        assert api.count(Run) == 1

    serve(body)
