"""What the security tests share: services whose releases go through staging to an approved
production with the command target (no processes to clean up), commits made as given people,
and waiting for what a user would see through the API."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from conveyor.server.tokens import create_token
from tests.conftest import GIT_ENV, GitRepo
from tests.server.conftest import Api, until

PIPELINE = """\
service: {service}
jobs:
  build:
    run: 'true'
environments:
  staging:
    deploy: {{ target: command, deploy: 'true' }}
  production:
    after: staging
    approval: {{ approvers: [ops] }}
    deploy: {{ target: command, deploy: 'true' }}
"""
ADA = ("Ada Author", "ada@example.com")
SAM = ("Sam Sample", "sam@example.com")
OLGA = ("Olga Ops", "olga@example.com")
RULE = (
    "in the range being deployed: no self-approval (unless the approval says self_approval: true)"
)


def new_repo(path: Path, service: str) -> GitRepo:
    """A repository whose first commit (by Ada) holds the service's pipeline."""
    path.mkdir(parents=True)
    repo = GitRepo(path)
    repo.git("init", "-q", "-b", "main")
    repo.write("conveyor.yml", PIPELINE.format(service=service))
    commit_as(repo, "pipeline", ADA)
    return repo


def commit_as(
    repo: GitRepo,
    message: str,
    author: tuple[str, str],
    committer: tuple[str, str] | None = None,
) -> str:
    """A commit with this author (and committer: the author unless given); its sha."""
    name, email = committer or author
    env = {
        **os.environ,
        **GIT_ENV,
        "HOME": str(repo.path.parent),
        "GIT_AUTHOR_NAME": author[0],
        "GIT_AUTHOR_EMAIL": author[1],
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    for args in (["add", "-A"], ["commit", "-q", "--allow-empty", "-m", message]):
        subprocess.run(["git", "-C", str(repo.path), *args], check=True, env=env)
    return repo.git("rev-parse", "HEAD")


def short(sha: str) -> str:
    return sha[:7]


def token(
    api: Api,
    name: str,
    *scopes: str,
    user: str | None = None,
    services: tuple[str, ...] = (),
    environments: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
) -> str:
    return create_token(
        api.store,
        name,
        list(scopes),
        user,
        services=services,
        environments=environments,
        labels=labels,
    )


async def people(api: Api) -> None:
    """sam and olga write code and are in ops; carl is in ops and writes none."""
    for name, email in (("sam", SAM[1]), ("olga", OLGA[1]), ("carl", "carl@example.com")):
        r = await api.post("/users", {"name": name, "emails": [email], "groups": ["ops"]})
        assert r.status_code == 201, r.text


async def release_of(api: Api, service: str, sha: str) -> dict[str, Any]:
    """The release of ``sha``, once its run has made it."""

    async def made() -> Any:
        releases = (await api.get("/releases", params={"service": service})).json()
        return next((r for r in releases if r["sha"] == sha), None)

    found: dict[str, Any] = await until(made, 30, f"the release of {sha[:7]}")
    return found


async def waiting_approval(api: Api, release: int) -> dict[str, Any]:
    """The pending production approval of ``release``."""

    async def pending() -> Any:
        rows = (await api.get("/approvals")).json()
        return next((a for a in rows if a["release"] == release), None)

    found: dict[str, Any] = await until(pending, 30, f"the approval of release {release}")
    return found


async def serving(api: Api, service: str, environment: str, release: int) -> None:
    async def there() -> bool:
        envs = (await api.get("/environments", params={"service": service})).json()
        return any(e["environment"] == environment and e["release"] == release for e in envs)

    await until(there, 30, f"{service} {environment} serving release {release}")


async def approve(api: Api, approval: int, as_token: str) -> tuple[int, str]:
    """(status, the error message or the approval's status)."""
    r = await api.post(f"/approvals/{approval}/approve", {"reason": "ok"}, token=as_token)
    body = r.json()
    return r.status_code, body["error"]["message"] if "error" in body else body["status"]


async def deliver(api: Api, service: str, sha: str) -> dict[str, Any]:
    """Trigger a run of ``sha`` through the API (no pusher) and wait for its release."""
    run = await api.trigger(service, sha)
    assert (await api.wait_run(run["id"], 30))["status"] == "succeeded"
    return await release_of(api, service, sha)
