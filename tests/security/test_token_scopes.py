"""Tokens limited to services and environments (issue 12, item 3), against the server
in-process with real git repositories: a token for shop acts on shop and on nothing else (403
naming the other service, and nothing happens there); a runner token for shop is leased shop's
jobs only; a hook token triggers its repository's services only; and a forge webhook for a
service that does not exist is answered exactly like one with a wrong signature."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

from conveyor.server.app import ServerConfig
from conveyor.server.tokens import authenticate
from conveyor.store.db import Settings, open_store
from conveyor.store.models import utcnow
from tests.alertmanager import alert, notification, seed_history
from tests.conftest import Conveyor
from tests.security.scene import (
    ADA,
    commit_as,
    deliver,
    new_repo,
    people,
    release_of,
    serving,
    token,
    waiting_approval,
)
from tests.server.conftest import API, Api, Serve, serve, until
from tests.server.test_server_webhooks import deliver as deliver_webhook
from tests.server.test_server_webhooks import github_headers, github_push
from tests.serverproc import Processes, clean_env, conveyor_argv, processes
from tests.serverproc import until as serverproc_until

# The fixtures of the in-process server (tests/server) and of real server processes.
__all__ = ["processes", "serve"]


async def env(api: Api, service: str, environment: str) -> dict[str, Any]:
    rows = (await api.get("/environments", params={"service": service})).json()
    found: dict[str, Any] = next(e for e in rows if e["environment"] == environment)
    return found


def refused(r: Any, service: str) -> str:
    assert r.status_code == 403, r.text
    message: str = r.json()["error"]["message"]
    assert service in message, message
    return message


def test_a_token_for_shop_acts_on_shop_and_on_nothing_else(serve: Serve, tmp_path: Path) -> None:
    shop = new_repo(tmp_path / "shop", "shop")
    billing = new_repo(tmp_path / "billing", "billing")

    async def body(api: Api) -> None:
        await people(api)
        await api.register("shop", shop.path)
        await api.register("billing", billing.path)
        # Two releases of each serve staging one after the other (so there is a rollback).
        releases: dict[str, list[int]] = {"shop": [], "billing": []}
        for name, repo in (("shop", shop), ("billing", billing)):
            for sha in (repo.git("rev-parse", "HEAD"), commit_as(repo, "v2", ADA)):
                release = await deliver(api, name, sha)
                await serving(api, name, "staging", release["id"])
                releases[name].append(release["id"])
        ci = token(api, "ci-shop", "trigger", services=("shop",))
        billing_runs = len((await api.get("/runs", params={"service": "billing"})).json())

        message = refused(await api.post("/runs", {"service": "billing"}, token=ci), "billing")
        assert message == "token ci-shop may trigger service shop only, not billing"
        r = await api.post("/runs", {"service": "shop"}, token=ci)
        assert r.status_code == 201, r.text

        promote = {"environment": "staging"}
        billing_release, shop_release = releases["billing"][0], releases["shop"][0]
        refused(
            await api.post(f"/releases/{billing_release}/promote", promote, token=ci), "billing"
        )
        r = await api.post(f"/releases/{shop_release}/promote", promote, token=ci)
        assert r.status_code == 201, r.text
        await serving(api, "shop", "staging", shop_release)

        back = "/services/{}/environments/staging/rollback"
        refused(await api.post(back.format("billing"), {}, token=ci), "billing")
        r = await api.post(back.format("shop"), {"to": releases["shop"][1]}, token=ci)
        assert r.status_code == 201, r.text
        await serving(api, "shop", "staging", releases["shop"][1])

        hold = "/services/{}/environments/staging/{}"
        refused(
            await api.post(hold.format("billing", "hold"), {"reason": "x"}, token=ci), "billing"
        )
        r = await api.post(hold.format("shop", "hold"), {"reason": "freeze"}, token=ci)
        assert r.status_code == 200, r.text
        assert r.json()["held"] is True
        refused(await api.post(hold.format("billing", "unhold"), token=ci), "billing")
        assert (await api.post(hold.format("shop", "unhold"), token=ci)).status_code == 200

        [billing_run, *_] = (await api.get("/runs", params={"service": "billing"})).json()
        refused(await api.post(f"/runs/{billing_run['id']}/cancel", token=ci), "billing")
        refused(await api.post(f"/runs/{billing_run['id']}/rerun", {}, token=ci), "billing")

        # Nothing happened to billing: no run, no deployment, no hold.
        assert len((await api.get("/runs", params={"service": "billing"})).json()) == billing_runs
        staging = await env(api, "billing", "staging")
        assert (staging["release"], staging["held"], staging["queue"]) == (
            releases["billing"][1],
            False,
            [],
        )

        # An approver limited to shop's staging: billing's production approval is not theirs.
        carl = token(api, "carl-shop", "approve", user="carl", services=("shop",))
        billing_approval = await waiting_approval(api, releases["billing"][0])
        r = await api.post(f"/approvals/{billing_approval['id']}/approve", {}, token=carl)
        assert refused(r, "billing") == (
            "token carl-shop may approve service shop only, not billing production"
        )
        rows = (await api.get("/approvals", token=carl)).json()
        mine = {row["service"]: row["you"] for row in rows}
        assert mine["billing"]["may_decide"] is False
        assert mine["shop"] == {"may_decide": True, "reason": None}
        staging_only = token(api, "carl-staging", "approve", user="carl", environments=("staging",))
        shop_approval = await waiting_approval(api, releases["shop"][0])
        r = await api.post(f"/approvals/{shop_approval['id']}/approve", {}, token=staging_only)
        refused(r, "shop production")
        r = await api.post(f"/approvals/{shop_approval['id']}/approve", {}, token=carl)
        assert r.status_code == 200, r.text

    serve(body)


def test_a_hook_token_triggers_its_repositorys_services_only(serve: Serve, tmp_path: Path) -> None:
    shop = new_repo(tmp_path / "shop", "shop")
    billing = new_repo(tmp_path / "billing", "billing")

    async def body(api: Api) -> None:
        await api.register("shop", shop.path)
        await api.register("billing", billing.path)
        r = await api.post("/hook-tokens", {"repository": str(shop.path)})
        assert r.status_code == 201, r.text
        hook = r.json()["token"]
        push = {"ref": "refs/heads/main", "before": "0" * 40, "pusher": "sam"}

        sha = billing.git("rev-parse", "HEAD")
        r = await api.post(
            "/hooks/git", push | {"repository": str(billing.path), "after": sha}, token=hook
        )
        refused(r, "billing")
        assert (await api.get("/runs", params={"service": "billing"})).json() == []

        sha = shop.git("rev-parse", "HEAD")
        r = await api.post(
            "/hooks/git", push | {"repository": str(shop.path), "after": sha}, token=hook
        )
        assert r.status_code == 202, r.text
        await release_of(api, "shop", sha)
        # It may trigger, nothing more: no tokens of its own, no approvals, no people.
        r = await api.post("/hook-tokens", {"repository": str(shop.path)}, token=hook)
        assert r.status_code == 403

    serve(body)


def test_a_webhook_for_an_unknown_service_is_answered_like_a_bad_signature(
    serve: Serve, tmp_path: Path
) -> None:
    shop = new_repo(tmp_path / "shop", "shop")
    secret = "shop-webhook-secret-0123456789"

    async def body(api: Api) -> None:
        await api.register("shop", shop.path, webhook_secret=secret)
        sha = shop.git("rev-parse", "HEAD")
        data = github_push(sha, "0" * 40)
        answers = [
            await deliver_webhook(api, "github", "shop", data, github_headers("wrong", data)),
            await deliver_webhook(api, "github", "nosuch", data, github_headers(secret, data)),
            await deliver_webhook(api, "github", "nosuch", data, github_headers("wrong", data)),
            await deliver_webhook(api, "github", "shop", data, github_headers(None, data)),
            await deliver_webhook(api, "github", "nosuch", data, github_headers(None, data)),
        ]
        assert {(r.status_code, r.content) for r in answers} == {(401, answers[0].content)}
        api.nothing_received()

    serve(body)


def test_a_runner_token_for_shop_is_not_leased_billings_job(serve: Serve, tmp_path: Path) -> None:
    shop = new_repo(tmp_path / "shop", "shop")
    billing = new_repo(tmp_path / "billing", "billing")

    async def body(api: Api) -> None:
        await api.register("shop", shop.path)
        await api.register("billing", billing.path)
        first = await api.trigger("billing")  # queued first: the oldest job is billing's
        second = await api.trigger("shop")
        runner = token(api, "runner-shop", "runner", services=("shop",), labels=("linux",))

        async def lease(labels: list[str]) -> Any:
            return await api.post(
                "/runners/lease", {"name": "box", "labels": labels, "wait": 0}, token=runner
            )

        async def queued() -> bool:
            jobs = (await api.run(second["id"]))["jobs"]
            return all(j["status"] == "queued" for j in jobs)

        await until(queued, 10, "shop's job to be queued")
        r = await lease(["linux"])
        assert r.status_code == 200, r.text
        assert (r.json()["run_id"], r.json()["context"]["service"]) == (second["id"], "shop")
        assert (await lease(["linux"])).status_code == 204  # billing's is still there, not ours
        [job] = (await api.run(first["id"]))["jobs"]
        assert job["status"] == "queued"

        r = await lease(["linux", "deploy-keys"])
        assert r.status_code == 403
        assert r.json()["error"]["message"] == (
            "token runner-shop may claim labels linux only, not deploy-keys"
        )
        # Any runner may still take billing's job: it was held back for this token only.
        anyone = token(api, "runner-any", "runner")
        r = await api.post(
            "/runners/lease", {"name": "other", "labels": [], "wait": 0}, token=anyone
        )
        assert r.status_code == 200, r.text
        assert r.json()["run_id"] == first["id"]

    serve(body, ServerConfig(runner_slots=0))


def test_token_create_limits_a_token_to_services_environments_and_labels(
    conveyor: Conveyor,
) -> None:
    made = conveyor(
        "token",
        "create",
        "ci",
        "--scopes",
        "trigger",
        "--service",
        "shop",
        "--service",
        "billing",
        "--environment",
        "staging",
        check=True,
    )
    value = made.stdout.splitlines()[0]
    listed = conveyor("token", "list", check=True).stdout
    assert "services=billing,shop environments=staging" in listed
    store = open_store(Settings.resolve(conveyor.home))
    try:
        identity = authenticate(store, value)
        assert identity is not None
        assert (identity.services, identity.environments) == (
            frozenset({"shop", "billing"}),
            frozenset({"staging"}),
        )
    finally:
        store.close()
    wrong = conveyor("token", "create", "r", "--scope", "trigger", "--label", "gpu")
    assert wrong.returncode != 0
    assert "--label limits runner tokens only" in wrong.stderr
    bad = conveyor("token", "create", "x", "--scope", "trigger", "--service", "a b")
    assert bad.returncode != 0
    assert "'a b' is not a service name" in bad.stderr


def test_a_user_limited_to_shop_signs_in_to_a_session_limited_to_shop(
    serve: Serve, tmp_path: Path
) -> None:
    shop = new_repo(tmp_path / "shop", "shop")
    billing = new_repo(tmp_path / "billing", "billing")

    async def body(api: Api) -> None:
        await api.register("shop", shop.path)
        await api.register("billing", billing.path)
        assert (await api.post("/users", {"name": "olga"})).status_code == 201
        credentials = {"password": "correct horse", "scopes": ["trigger"], "services": ["shop"]}
        r = await api.client.put(
            f"{API}/users/olga/credentials", json=credentials, headers=api.auth(api.admin)
        )
        assert r.status_code == 204, r.text
        browser = {"X-Conveyor-CSRF": "1"}
        r = await api.client.post(
            f"{API}/session",
            json={"user": "olga", "password": "correct horse"},
            headers=browser,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["services"], r.json()["environments"]) == (["shop"], [])

        r = await api.client.post(f"{API}/runs", json={"service": "billing"}, headers=browser)
        assert refused(r, "billing") == "olga may trigger service shop only, not billing"
        r = await api.client.post(f"{API}/runs", json={"service": "shop"}, headers=browser)
        assert r.status_code == 201, r.text

    serve(body)


def test_alerts_and_incidents_outside_a_tokens_services_change_nothing(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)  # shop, serving in production and staging
        seed_history(api.store, now, service="billing")
        billing = token(api, "am-billing", "trigger", services=("billing",))
        start = (now - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        group = notification(
            alert(fingerprint="bbbb000000000001", starts_at=start),
            alert(fingerprint="bbbb000000000002", starts_at=start, labels={"service": "billing"}),
        )
        r = await api.client.post(
            f"{API}/hooks/alertmanager", json=group, headers=api.auth(billing)
        )
        assert r.status_code == 200, r.text  # Alertmanager must not drop billing's alert
        shop_alert, billing_alert = r.json()["alerts"]
        assert shop_alert["outcome"] == "ignored"
        assert shop_alert["reason"] == "the sender's token may not act on shop production"
        assert billing_alert["outcome"] == "opened"
        incidents = (await api.get("/incidents")).json()
        assert [i["service"] for i in incidents] == ["billing"]

        opened = {"service": "shop", "title": "checkout is down"}
        refused(await api.post("/incidents", opened, token=billing), "shop")
        r = await api.post(f"/incidents/{incidents[0]['id']}/resolve", {}, token=billing)
        assert r.status_code == 200, r.text
        assert [i["service"] for i in (await api.get("/incidents")).json()] == ["billing"]

    serve(body)


def test_hook_install_gives_the_hook_a_token_of_its_own_limited_to_its_service(
    processes: Processes, tmp_path: Path
) -> None:
    server = processes.server()
    shop = new_repo(tmp_path / "shop", "shop")
    server.add_service("shop", shop.path)
    admin = server.env | {"CONVEYOR_URL": server.url, "CONVEYOR_TOKEN": server.admin}

    def install() -> str:
        out = subprocess.run(
            conveyor_argv("hook", "install", str(shop.path)),
            env=admin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    made = r"created token (hook-shop-\w+) for the hook \(trigger, services shop\)"
    first = re.search(made, install())
    assert first is not None
    again = install()
    assert f"revoked the previous hook's token {first[1]}" in again
    second = re.search(r"created token (hook-shop-\w+)", again)
    assert second is not None
    listed = {line.split()[0]: line for line in server.cli("token", "list").splitlines()[1:]}
    assert "services=shop" in listed[second[1]]
    assert listed[first[1]].rstrip().split()[-1] != "-"  # revoked: it has a revocation time

    # A commit runs the hook: the pusher it names is kept as that token's claim.
    env = clean_env(HOME=str(tmp_path), USER="release-bot")
    subprocess.run(
        ["git", "-C", str(shop.path), "commit", "-q", "--allow-empty", "-m", "via the hook"],
        env=env,
        check=True,
    )
    sha = shop.git("rev-parse", "HEAD")

    def run_of_sha() -> Any:
        runs = server.api("GET", "/runs", params={"service": "shop"}).json()
        return next((r for r in runs if r["sha"] == sha), None)

    run = serverproc_until(run_of_sha, 20, "the hook's run")
    commit = server.run(run["id"])["commit"]
    assert (commit["pusher"], commit["pusher_via"]) == (
        "release-bot",
        f"claimed by token {second[1]}",
    )
