"""Secrets scoped to a service and an environment (decision 0011), with real repositories, real
runs and real servers: a job resolves only what its env references, for its own service; an
environment's secret reaches only deployments to that environment; the server's and runner's
own environment is never resolvable; values are sealed in the database with the key file."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.server.tokens import create_token
from conveyor.store.db import Settings, open_store
from tests.conftest import Conveyor, GitRepo, Result
from tests.delivery.harness import delivery, pipeline, release
from tests.server.test_server_webhooks import github_headers, github_push
from tests.serverproc import ServerProcess, clean_env, conveyor_argv

SHOP_VALUE = "shop-s3cret/with+chars&more"
METRICS_TOKEN = "server-metrics-token-0451"
SLACK_SECRET = "server-slack-signing-0452"
SERVER_ONLY = "server-only-variable-0453"


def secret_cli(
    conveyor: Conveyor, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> Result:
    """`conveyor secret ...`, with `stdin` piped in (never a terminal here)."""
    proc = subprocess.run(
        conveyor.argv("secret", *args),
        input=stdin if stdin is not None else "",
        cwd=cwd or conveyor.cwd,
        env=conveyor.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.output, result.output
    return result


def stored_bytes(home: Path) -> bytes:
    data = (home / "conveyor.db").read_bytes()
    wal = home / "conveyor.db-wal"
    return data + (wal.read_bytes() if wal.exists() else b"")


def raw_secrets(home: Path) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(f"file:{home / 'conveyor.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT service, environment, name, value FROM secrets ORDER BY id")
        return [tuple(r) for r in rows]
    finally:
        db.close()


def new_repo(path: Path) -> GitRepo:
    path.mkdir()
    other = GitRepo(path)
    other.git("init", "-q", "-b", "main")
    return other


# --- the commands ------------------------------------------------------------------------------


def test_set_reads_stdin_seals_the_value_and_list_shows_names_only(
    repo: GitRepo, conveyor: Conveyor, tmp_path: Path
) -> None:
    done = secret_cli(conveyor, "set", "shop", "API_TOKEN", stdin=SHOP_VALUE + "\n")
    assert done.returncode == 0, done.output
    assert "secret API_TOKEN set for service shop" in done.stdout
    prod_file = tmp_path / "prod-token"
    prod_file.write_text("production-only-value-77", encoding="utf-8")
    done = secret_cli(
        conveyor, "set", "shop", "--environment", "production", "DEPLOY_KEY",
        "--value-file", str(prod_file),
    )  # fmt: skip
    assert done.returncode == 0, done.output
    again = secret_cli(conveyor, "set", "shop", "API_TOKEN", stdin=SHOP_VALUE + "\n")
    assert "secret API_TOKEN updated for service shop" in again.stdout

    listed = secret_cli(conveyor, "list", "shop")
    assert listed.returncode == 0
    assert "API_TOKEN" in listed.stdout
    assert "all environments" in listed.stdout
    assert "DEPLOY_KEY" in listed.stdout
    assert "production" in listed.stdout
    as_json = secret_cli(conveyor, "list", "shop", "--json")
    assert [(s["name"], s["environment"]) for s in as_json.json()] == [
        ("API_TOKEN", None),
        ("DEPLOY_KEY", "production"),
    ]
    only = secret_cli(conveyor, "list", "shop", "--environment", "production", "--json")
    assert [s["name"] for s in only.json()] == ["DEPLOY_KEY"]
    for shown in (listed.output, as_json.output, only.output):
        assert SHOP_VALUE not in shown
        assert "production-only-value-77" not in shown

    # Sealed at rest: the table holds Fernet tokens, the file holds neither value in clear.
    rows = raw_secrets(conveyor.home)
    assert [(s, e, n) for s, e, n, _ in rows] == [
        ("shop", "", "API_TOKEN"),
        ("shop", "production", "DEPLOY_KEY"),
    ]
    assert all(value.startswith("fernet:") for *_, value in rows)
    stored = stored_bytes(conveyor.home)
    assert SHOP_VALUE.encode() not in stored
    assert b"production-only-value-77" not in stored
    key = conveyor.home / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600

    # The value a job gets is the one piped in, without echo's newline.
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              use:
                env: { TOKEN: "${{ secrets.API_TOKEN }}" }
                run: |
                  echo "token=$TOKEN"
                  test "$TOKEN" = 'shop-s3cret/with+chars&more' && echo same-value
            """
        },
    )
    conveyor("run", check=True)
    logs = conveyor("logs", "1").stdout
    assert "token=***" in logs
    assert "same-value" in logs
    assert SHOP_VALUE not in logs


def test_names_and_values_are_checked_before_anything_is_stored(conveyor: Conveyor) -> None:
    reserved = secret_cli(conveyor, "set", "shop", "CONVEYOR_METRICS_TOKEN", stdin="x" * 10)
    assert reserved.returncode == 1
    assert "CONVEYOR_" in reserved.stderr
    assert "refused" in reserved.stderr
    empty = secret_cli(conveyor, "set", "shop", "TOKEN", stdin="\n")
    assert empty.returncode == 1
    assert "the value of secret TOKEN is empty" in empty.stderr
    bad = secret_cli(conveyor, "set", "Shop!", "TOKEN", stdin="value")
    assert bad.returncode == 1
    assert "'Shop!' is not a service name" in bad.stderr
    assert secret_cli(conveyor, "list", "shop", "--json").json() == []


def test_rm_removes_a_secret_and_a_job_then_fails_naming_it(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    secret_cli(conveyor, "set", "shop", "API_TOKEN", stdin="to-be-removed-123")
    secret_cli(conveyor, "set", "shop", "-e", "staging", "API_TOKEN", stdin="staging-456")
    gone = secret_cli(conveyor, "rm", "shop", "API_TOKEN")
    assert gone.returncode == 0, gone.output
    assert "secret API_TOKEN removed from service shop" in gone.stdout
    # The staging one is another secret: still there.
    assert [s["environment"] for s in secret_cli(conveyor, "list", "shop", "--json").json()] == [
        "staging"
    ]
    again = secret_cli(conveyor, "rm", "shop", "API_TOKEN")
    assert again.returncode == 1
    assert "there is no secret API_TOKEN for service shop" in again.stderr
    audit = conveyor("audit", "--service", "shop", "--json", check=True)
    assert [(e["type"], e["data"]["name"], e["data"]["environment"]) for e in audit.json()] == [
        ("secret.removed", "API_TOKEN", None),
        ("secret.set", "API_TOKEN", "staging"),
        ("secret.set", "API_TOKEN", None),
    ]
    assert "to-be-removed-123" not in audit.stdout

    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              use:
                env: { TOKEN: "${{ secrets.API_TOKEN }}" }
                run: echo "$TOKEN"
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 1
    assert "secret API_TOKEN is not set for service shop" in result.output
    assert "conveyor secret set shop API_TOKEN" in conveyor("logs", "1").stdout


def test_import_from_a_secrets_env_and_the_old_file_is_no_longer_read(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    conveyor.home.mkdir()
    old = conveyor.home / "secrets.env"
    old.write_text(
        "# the file of earlier versions\nAPI_TOKEN=imported-token-99\n"
        "export OTHER='quoted value 98'\n",
        encoding="utf-8",
    )
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              use:
                env: { TOKEN: "${{ secrets.API_TOKEN }}", OTHER: "${{ secrets.OTHER }}" }
                run: echo "token=$TOKEN other=$OTHER"
            """
        },
    )
    # Before the import the file is not read, and `conveyor run` says what to do with it.
    before = conveyor("run")
    assert before.returncode == 1
    assert f"{old} is no longer read" in before.stderr
    assert f"conveyor secret import SERVICE {old}" in before.stderr
    assert "secret API_TOKEN is not set for service shop" in before.output

    imported = secret_cli(conveyor, "import", "shop", str(old))
    assert imported.returncode == 0, imported.output
    assert "imported 2 secret(s) into service shop: API_TOKEN, OTHER" in imported.stdout
    assert "imported-token-99" not in imported.output
    conveyor("run", check=True)
    logs = conveyor("logs", "2").stdout
    assert "token=*** other=***" in logs

    broken = conveyor.home / "broken.env"
    broken.write_text("GOOD=1\nthis is not NAME=value\n", encoding="utf-8")
    refused = secret_cli(conveyor, "import", "shop", "-e", "staging", str(broken))
    assert refused.returncode == 1
    assert "broken.env:2: expected NAME=value" in refused.stderr
    assert [s["name"] for s in secret_cli(conveyor, "list", "shop", "--json").json()] == [
        "API_TOKEN",
        "OTHER",
    ]


def test_a_job_resolves_only_its_own_services_secrets(
    repo: GitRepo, conveyor: Conveyor, tmp_path: Path
) -> None:
    secret_cli(conveyor, "set", "shop", "SHOP_TOKEN", stdin=SHOP_VALUE)
    billing = new_repo(tmp_path / "billing")
    billing.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: billing
            jobs:
              steal:
                env: { STOLEN: "${{ secrets.SHOP_TOKEN }}" }
                run: echo "stolen=$STOLEN"
            """
        },
    )
    result = conveyor("run", cwd=billing.path)
    assert result.returncode == 1
    assert "secret SHOP_TOKEN is not set for service billing" in result.output
    assert SHOP_VALUE not in result.output
    logs = conveyor("logs", "1").stdout
    assert "stolen=" not in logs  # the step never started
    assert SHOP_VALUE not in logs


def test_a_missing_or_different_key_file_is_named(repo: GitRepo, conveyor: Conveyor) -> None:
    secret_cli(conveyor, "set", "shop", "API_TOKEN", stdin="sealed-with-the-first-key")
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              use:
                env: { TOKEN: "${{ secrets.API_TOKEN }}" }
                run: echo "$TOKEN"
            """
        },
    )
    key = conveyor.home / "secrets.key"
    kept = key.read_bytes()
    key.unlink()
    missing = conveyor("run")
    assert missing.returncode == 1
    assert f"the secrets key file {key} is missing" in missing.output
    # Nothing is sealed with a new key while the old one is lost.
    refused = secret_cli(conveyor, "set", "shop", "OTHER", stdin="value")
    assert refused.returncode == 1
    assert "is missing" in refused.stderr
    assert not key.exists()

    other = conveyor.home / "other.key"
    other.write_bytes(b"Dzc3ZWQwMDk1NjhkNDk0ZTk2ZDk2OTQ3OTYzMGJlNDA=\n")
    conveyor.extra_env["CONVEYOR_SECRETS_KEY_FILE"] = str(other)
    wrong = conveyor("run")
    assert wrong.returncode == 1
    assert "was sealed with the secrets key" in wrong.output
    assert f"the key file {other} holds key" in wrong.output
    mixed = secret_cli(conveyor, "set", "shop", "OTHER", stdin="value")
    assert mixed.returncode == 1
    assert "was sealed with the secrets key" in mixed.stderr

    del conveyor.extra_env["CONVEYOR_SECRETS_KEY_FILE"]
    key.write_bytes(kept)
    conveyor("run", check=True)


# --- a server: its built-in runner, and a runner agent ------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """`conveyor server` whose own environment holds settings and a variable a pipeline must
    never resolve."""
    started = ServerProcess(tmp_path / "home", runners=0)
    started.env |= {
        "CONVEYOR_METRICS_TOKEN": METRICS_TOKEN,
        "CONVEYOR_SLACK_SIGNING_SECRET": SLACK_SECRET,
        "SERVER_ONLY": SERVER_ONLY,
    }
    started.admin = started.token("admin", "admin")
    yield started
    started.stop()


def remote_secret(
    server: ServerProcess, *args: str, token: str | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`conveyor secret ...` through the server (CONVEYOR_URL), as from another machine."""
    env = clean_env(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=token or server.admin)
    proc = subprocess.run(
        conveyor_argv("secret", *args),
        input=stdin,
        env=env,
        cwd=server.home.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


BILLING = """\
service: billing
jobs:
  steal:
    env: { STOLEN: "${{ secrets.SHOP_TOKEN }}" }
    run: echo "stolen=$STOLEN"
  settings:
    env: { M: "${{ secrets.CONVEYOR_METRICS_TOKEN }}", S: "${{ secrets.CONVEYOR_SLACK_SIGNING_SECRET }}" }
    run: echo "m=$M s=$S"
  environment:
    env: { V: "${{ secrets.SERVER_ONLY }}" }
    run: echo "v=$V"
  own:
    env: { MINE: "${{ secrets.BILLING_TOKEN }}" }
    run: echo "mine=$MINE"
"""  # noqa: E501


@pytest.mark.integration
@pytest.mark.parametrize("runner", ["built-in", "agent"])
def test_a_server_hands_a_job_only_its_services_referenced_secrets(
    server: ServerProcess, repo: GitRepo, tmp_path: Path, runner: str
) -> None:
    server.runners = 1 if runner == "built-in" else 0
    shop, billing = repo, new_repo(tmp_path / "billing")
    shop.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              use:
                env: { TOKEN: "${{ secrets.SHOP_TOKEN }}" }
                run: echo "token=$TOKEN"
            """
        },
    )
    billing.commit("pipeline", {"conveyor.yml": BILLING})
    server.add_service("shop", shop.path)
    server.add_service("billing", billing.path)
    server.start()
    agent = None
    if runner == "agent":
        token = server.token("agent", "runner")
        work = tmp_path / "agent"
        agent_env = clean_env(
            CONVEYOR_URL=server.url,
            CONVEYOR_TOKEN=token,
            CONVEYOR_METRICS_TOKEN=METRICS_TOKEN,
            SERVER_ONLY=SERVER_ONLY,
        )
        agent = subprocess.Popen(
            conveyor_argv("runner", "--name", "a1", "--work-dir", str(work)),
            env=agent_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        for service, name, value in (
            ("shop", "SHOP_TOKEN", SHOP_VALUE),
            ("billing", "BILLING_TOKEN", "billing-own-token-31"),
        ):
            done = remote_secret(server, "set", service, name, stdin=value)
            assert done.returncode == 0, done.stderr
        shop_run = server.wait_run(server.trigger("shop")["id"])
        billing_run = server.wait_run(server.trigger("billing")["id"])
    finally:
        if agent is not None:
            agent.terminate()
            agent.communicate(timeout=30)

    assert shop_run["status"] == "succeeded"
    assert "token=***" in [line["text"] for line in server.logs(shop_run["id"])]
    reasons = {j["name"]: j["reason"] for j in billing_run["jobs"]}
    assert reasons == {
        "steal": "secret SHOP_TOKEN is not set for service billing",
        "settings": "secret CONVEYOR_METRICS_TOKEN is not set for service billing",
        "environment": "secret SERVER_ONLY is not set for service billing",
        "own": None,
    }
    logs = "\n".join(line["text"] for line in server.logs(billing_run["id"]))
    assert "mine=***" in logs
    for value in (SHOP_VALUE, METRICS_TOKEN, SLACK_SECRET, SERVER_ONLY, "billing-own-token-31"):
        assert value not in logs
    assert "stolen=" not in logs
    assert "m=" not in logs
    assert "v=" not in logs


@pytest.mark.integration
def test_the_secrets_api_needs_an_admin_of_that_service(
    server: ServerProcess, repo: GitRepo
) -> None:
    server.start()
    path = "/services/shop/secrets/API_TOKEN"
    r = server.api("PUT", path, json={"value": "from-the-api-1"})
    assert r.status_code == 200, r.text
    assert r.json()["created"] is True
    assert "from-the-api-1" not in r.text
    listed = server.api("GET", "/services/shop/secrets")
    assert [s["name"] for s in listed.json()] == ["API_TOKEN"]
    assert "from-the-api-1" not in listed.text

    store = open_store(
        Settings(home=server.home, database_url=f"sqlite:///{server.home}/conveyor.db")
    )
    try:
        reader = create_token(store, "reader", ["read", "trigger", "approve"])
        billing_admin = create_token(store, "billing-admin", ["admin"], services=["billing"])
        staging_admin = create_token(store, "staging-admin", ["admin"], environments=["staging"])
    finally:
        store.close()
    assert server.api("GET", "/services/shop/secrets", token=reader).status_code == 403
    assert server.api("PUT", path, token=reader, json={"value": "x" * 8}).status_code == 403
    r = server.api("PUT", path, token=billing_admin, json={"value": "x" * 8})
    assert r.status_code == 403
    assert "shop" in r.json()["error"]["message"]
    # A staging-only admin may set staging's secret, not one that reaches production too.
    r = server.api("PUT", path, token=staging_admin, json={"value": "x" * 8})
    assert r.status_code == 403
    assert "every environment" in r.json()["error"]["message"]
    r = server.api(
        "PUT", path, token=staging_admin, params={"environment": "staging"}, json={"value": "y" * 8}
    )
    assert r.status_code == 200, r.text
    r = server.api("PUT", "/services/shop/secrets/CONVEYOR_X", json={"value": "z" * 8})
    assert r.status_code == 400
    assert "refused" in r.json()["error"]["message"]

    listed_remote = remote_secret(server, "list", "shop")
    assert listed_remote.returncode == 0, listed_remote.stderr
    assert "API_TOKEN" in listed_remote.stdout
    assert "staging" in listed_remote.stdout
    gone = remote_secret(server, "rm", "shop", "API_TOKEN")
    assert gone.returncode == 0, gone.stderr
    missing = remote_secret(server, "rm", "shop", "API_TOKEN")
    assert missing.returncode == 1
    assert "there is no secret API_TOKEN for service shop" in missing.stderr


# --- webhook secrets ---------------------------------------------------------------------------


@pytest.mark.integration
def test_webhook_secrets_are_sealed_and_signed_webhooks_still_verify(
    server: ServerProcess, repo: GitRepo
) -> None:
    sha = repo.commit("pipeline", {"conveyor.yml": "service: svc\njobs:\n  t:\n    run: 'true'\n"})
    # A secret stored in clear by an earlier version: sealed when the server starts.
    server.add_service("legacy", repo.path)
    legacy_secret = "legacy-clear-webhook-secret-0123"
    db = sqlite3.connect(server.home / "conveyor.db")
    with db:
        db.execute("UPDATE services SET webhook_secret = ? WHERE name = 'legacy'", (legacy_secret,))
    db.close()
    server.start()
    r = server.api(
        "POST",
        "/services",
        json={"name": "svc", "repository": str(repo.path), "generate_webhook_secret": True},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["webhook_secret"]

    stored = dict(server.query("SELECT name, webhook_secret FROM services"))
    assert stored["svc"].startswith("fernet:")
    assert secret not in stored["svc"]
    assert stored["legacy"].startswith("fernet:")
    assert legacy_secret not in stored["legacy"]
    assert secret.encode() not in stored_bytes(server.home)

    body = github_push(sha, "0" * 40)
    for service, key in (("svc", secret), ("legacy", legacy_secret)):
        url = f"{server.url}/api/v1/hooks/github/{service}"
        good = httpx.post(url, content=body, headers=github_headers(key, body), timeout=10)
        assert good.status_code == 202, good.text
        forged = httpx.post(
            url, content=body, headers=github_headers("not-the-secret", body), timeout=10
        )
        assert forged.status_code == 401
    # Recorded before the answer: one delivery each, none for the forged ones.
    assert sorted(s for (s,) in server.query("SELECT service FROM deliveries")) == ["legacy", "svc"]


# --- environments ------------------------------------------------------------------------------


async def _deploy_and_settle(home: Path) -> None:
    async with delivery(home) as h:
        await h.settle()


def test_an_environment_secret_reaches_only_deployments_to_that_environment(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    import asyncio
    import hashlib

    # Deploy commands may run sandboxed: they say what they got in the deployment's log, as
    # digests (a deployment's log is not masked).
    record = (
        "for n in DB PROD_KEY; do "
        'echo "got $n $(printenv $n | sha256sum | cut -c1-16 || true)"; done'
    )
    envs = f"""
    staging:
      env: {{ DB: "${{{{ secrets.DB_PASSWORD }}}}" }}
      deploy: {{ target: command, deploy: '{record}' }}
    production:
      after: staging
      env: {{ DB: "${{{{ secrets.DB_PASSWORD }}}}", PROD_KEY: "${{{{ secrets.PROD_KEY }}}}" }}
      deploy: {{ target: command, deploy: '{record}' }}
    """

    def got(name: str, value: str | None) -> str:
        text = "" if value is None else value + "\n"  # printenv ends the value with a newline
        return f"got {name} {hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def log_of(environment: str) -> str:
        [dep] = conveyor("deployments", "--json").json()[:1]
        assert dep["environment"] == environment
        assert dep["status"] == "succeeded", dep
        return "\n".join(conveyor("deployment", str(dep["id"]), "--json").json()["log"])

    secret_cli(conveyor, "set", "shop", "DB_PASSWORD", stdin="shared-db-password")
    secret_cli(conveyor, "set", "shop", "-e", "production", "DB_PASSWORD", stdin="prod-db-pw")
    secret_cli(conveyor, "set", "shop", "-e", "production", "PROD_KEY", stdin="prod-only-key")
    release(repo, conveyor, "v1", pipeline(envs))
    asyncio.run(_deploy_and_settle(conveyor.home))
    production = log_of("production")
    assert got("DB", "prod-db-pw") in production
    assert got("PROD_KEY", "prod-only-key") in production
    deployments = conveyor("deployments", "--json").json()
    staging_id = next(d["id"] for d in deployments if d["environment"] == "staging")
    staging = "\n".join(conveyor("deployment", str(staging_id), "--json").json()["log"])
    assert got("DB", "shared-db-password") in staging
    assert got("PROD_KEY", None) in staging

    # Asking for production's secret from staging fails the staging deployment, naming it.
    greedy = envs.replace(
        'DB: "${{ secrets.DB_PASSWORD }}" }',
        'DB: "${{ secrets.DB_PASSWORD }}", PROD_KEY: "${{ secrets.PROD_KEY }}" }',
        1,
    )
    assert greedy != envs
    release(repo, conveyor, "v2", pipeline(greedy))
    asyncio.run(_deploy_and_settle(conveyor.home))
    [latest] = conveyor("deployments", "--json").json()[:1]
    assert latest["environment"] == "staging"
    assert latest["status"] == "failed"
    assert latest["reason"].startswith("secret PROD_KEY is not set for service shop in staging")
