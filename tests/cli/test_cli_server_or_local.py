"""With CONVEYOR_URL set, every command acts on that server or refuses and says why: none
quietly makes a new local data directory instead (what `token create` and `service add` did).
Real `conveyor` processes against a real `conveyor server` on 127.0.0.1, real git repositories;
the local data directory (CONVEYOR_HOME of the `conveyor` fixture) must stay absent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from tests.cli.conftest import run_that_goes_on
from tests.conftest import Conveyor, GitRepo
from tests.serverproc import ServerProcess

from conveyor.cli.main import COMMANDS, cli

# Every command, by what it does while CONVEYOR_URL is set. A new command must be put in one
# of these (test_every_command_is_accounted_for), which is the audit the issue asked for.
FOLLOWS_THE_SERVER = {
    "run", "runs", "show", "logs", "cancel", "rerun", "releases", "release", "envs",
    "deployments", "deployment", "promote", "rollback", "hold", "unhold", "approvals",
    "approve", "reject", "incidents", "audit", "user", "dora", "team", "incident", "import",
    "connectors", "secret", "service", "watch",
}  # fmt: skip
REFUSES = {"token", "db", "edge"}
# Not about the CLI's store: the server serves its own data directory, the demo makes its own,
# a runner and the hook call the server they are given (CONVEYOR_URL among the ways), and the
# pipeline-file commands read conveyor.yml only.
OWN_TARGET = {"server", "demo", "runner", "hook", "init", "validate", "schema", "explain"}

LOCAL_ONLY = "works on the local store only; unset CONVEYOR_URL or run it on the server"


def leaves(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from leaves(sub, (*path, name))
    else:
        yield path


def test_every_command_is_accounted_for() -> None:
    listed = FOLLOWS_THE_SERVER | REFUSES | OWN_TARGET
    assert set(COMMANDS) == listed, sorted(set(COMMANDS) ^ listed)
    assert not (FOLLOWS_THE_SERVER & REFUSES)
    assert not (OWN_TARGET & (FOLLOWS_THE_SERVER | REFUSES))


@pytest.mark.integration
def test_local_only_commands_refuse_and_say_why(conveyor: Conveyor, server: ServerProcess) -> None:
    ran = []
    for path in leaves(cli):
        if path[0] not in REFUSES:
            continue
        args = {("token", "create"): ["ci"], ("token", "revoke"): ["ci"]}.get(path, [])
        result = conveyor(*path, *args)
        assert result.returncode == 1, (path, result.output)
        assert f"error: `conveyor {' '.join(path)}` {LOCAL_ONLY}" in result.stderr, path
        assert server.url in result.stderr  # which server it would have meant
        assert "hint:" in result.stderr
        ran.append(" ".join(path))
    assert {"token create", "token list", "token revoke", "db upgrade", "edge status"} <= set(ran)
    assert not conveyor.home.exists()  # no local data directory was made
    assert server.query("SELECT name FROM tokens") == [("ann",)]  # nor a token on the server


@pytest.mark.integration
def test_service_add_and_list_go_to_the_server(
    conveyor: Conveyor, server: ServerProcess, repo: GitRepo
) -> None:
    repo.commit("first")
    added = conveyor("service", "add", "shop", "--repo", str(repo.path), "--webhook-secret")
    assert added.returncode == 0, added.output
    assert added.stdout.splitlines()[0] == f"service shop -> {repo.path}"
    assert "webhook secret (shown once): " in added.stdout
    listed = server.http.get("/services", headers={"Authorization": f"Bearer {server.admin}"})
    assert [(s["name"], s["signed_webhooks"]) for s in listed.json()] == [("shop", True)]
    relative = conveyor("service", "add", "other", "--repo", ".")
    assert relative.returncode == 1
    assert "error: . is a relative path, and the server would read it from its own" in (
        relative.stderr
    )
    missing = conveyor("service", "add", "other", "--repo", "/srv/nowhere")  # checked there
    assert missing.returncode == 1
    assert "error: the repository /srv/nowhere does not exist" in missing.stderr
    shown = conveyor("service", "list", check=True)
    assert "shop" in shown.stdout
    assert "signed" in shown.stdout
    assert not conveyor.home.exists()


@pytest.mark.integration
def test_listings_read_the_server_and_write_nothing_here(
    conveyor: Conveyor, server: ServerProcess
) -> None:
    for command in (
        ["runs"],
        ["releases"],
        ["envs"],
        ["deployments"],
        ["approvals"],
        ["incidents"],
        ["audit"],
        ["user", "list"],
        ["service", "list"],
        ["incident", "list"],
        ["secret", "list", "shop"],
        ["connectors", "list"],
    ):
        result = conveyor(*command)
        assert result.returncode in (0, 1), (command, result.output)
        assert not conveyor.home.exists(), command


# --- registering and removing a service ---------------------------------------------------------

PIPELINE = """\
service: shop
jobs:
  build:
    run: echo building
"""


def test_service_add_checks_the_repository_path(
    conveyor: Conveyor, repo: GitRepo, tmp_path: Path
) -> None:
    missing = conveyor("service", "add", "shop", "--repo", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert f"error: the repository {tmp_path / 'nowhere'} does not exist" in missing.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    not_git = conveyor("service", "add", "shop", "--repo", str(plain))
    assert not_git.returncode == 1
    assert f"error: {plain} is not a git repository" in not_git.stderr
    assert "git init" in not_git.stderr  # the remedy
    assert "shop" not in conveyor("service", "list", check=True).stdout  # nothing stored
    added = conveyor("service", "add", "shop", "--repo", str(repo.path), check=True)
    assert added.stdout.strip() == f"service shop -> {repo.path}"


def test_service_remove_says_what_it_removes_and_asks_first(
    conveyor: Conveyor, repo: GitRepo, database_url: str
) -> None:
    conveyor.extra_env["CONVEYOR_DATABASE_URL"] = database_url  # SQLite, and PostgreSQL
    repo.write("conveyor.yml", PIPELINE)
    repo.commit("pipeline")
    conveyor("run", check=True)  # registers shop and builds it once
    unconfirmed = conveyor("service", "remove", "shop")
    assert unconfirmed.returncode == 1
    assert "1 run, 1 release, 0 deployments" in unconfirmed.stdout
    assert "not removed: confirm with --yes" in unconfirmed.stderr
    assert len(conveyor("runs", "--json", check=True).json()) == 1  # nothing removed

    removed = conveyor("service", "remove", "shop", "--yes", check=True)
    assert "removing service shop" in removed.stdout
    assert "kept: the audit log and the DORA history" in removed.stdout
    assert removed.stdout.rstrip().endswith("service shop removed")
    assert conveyor("runs", check=True).stdout.startswith("no runs yet")
    assert conveyor("service", "list", "--json", check=True).json() == []
    assert "service.removed" in conveyor("audit", check=True).stdout

    again = conveyor("service", "remove", "shop", "--yes")
    assert again.returncode == 1
    assert "error: no service named 'shop'" in again.stderr


@pytest.mark.integration
def test_service_remove_through_the_server_refuses_while_a_run_is_in_progress(
    conveyor: Conveyor, server: ServerProcess, repo: GitRepo
) -> None:
    run_id = run_that_goes_on(conveyor, server, repo)

    refused = conveyor("service", "remove", "shop", "--yes")
    assert refused.returncode == 1
    # Its jobs wait for a runner: the run is queued or running, in progress either way.
    assert f"error: service shop has work in progress: run {run_id} (" in refused.stderr
    assert "conveyor cancel" in refused.stderr
    assert [s["name"] for s in server.api("GET", "/services").json()] == ["shop"]

    conveyor("cancel", str(run_id), check=True)
    removed = conveyor("service", "remove", "shop", "--yes", check=True)
    assert "1 run, 0 releases" in removed.stdout
    assert server.api("GET", "/services").json() == []
    assert server.api("GET", f"/runs/{run_id}").status_code == 404
    assert not conveyor.home.exists()
