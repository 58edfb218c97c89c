"""`conveyor hook`: the git hook hands pushes and commits to a real `conveyor server`, never
fails nor holds up the push when the server is down (the change waits in the spool and is
delivered later), and treats branch names as data."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import GIT_ENV, Conveyor, GitRepo

from conveyor.errors import ConveyorError
from conveyor.sources import hook, hookscript

PIPELINE = """\
service: {service}
on:
  push: {{ branches: [{branches}] }}
jobs:
  build:
    run: echo built
"""
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A real `conveyor server` on 127.0.0.1 with its own CONVEYOR_HOME, stopped by its PID."""

    def __init__(self, conveyor: Conveyor, cwd: Path) -> None:
        self.conveyor = conveyor
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            out = self.conveyor("token", "create", "hooks", "--scope", "trigger,read", check=True)
            self._token = out.stdout.splitlines()[0].strip()
        return self._token

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.conveyor.argv("server", "--port", str(self.port), "--runners", "2")],
                cwd=self.cwd,
                env=self.conveyor.env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def runs(self, service: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/api/v1/runs",
            params={"service": service, "limit": 100},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json()
        return runs

    def wait_for_run(self, service: str, sha: str) -> dict[str, Any]:
        """The run of `sha`, once finished (bounded polling of GET /api/v1/runs)."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            found = [r for r in self.runs(service) if r["sha"] == sha]
            if found and found[0]["status"] in FINISHED:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(
            f"no finished run of {sha} for {service}: {self.runs(service)}\n{self.log.read_text()}"
        )


@pytest.fixture
def server(conveyor: Conveyor, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(conveyor, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def git_env() -> dict[str, str]:
    return {**os.environ, **GIT_ENV}


def bare_with_clone(
    tmp_path: Path, service: str = "demo", branches: str = "main"
) -> tuple[GitRepo, GitRepo]:
    """A bare repository (what the server builds from) and a clone to push from, holding a
    pipeline for `service` on main."""
    bare = GitRepo(tmp_path / f"{service}.git")
    bare.path.mkdir()
    bare.git("init", "-q", "--bare", "-b", "main")
    clone = GitRepo(tmp_path / f"{service}-work")
    clone.path.mkdir()
    clone.git("init", "-q", "-b", "main")
    clone.git("remote", "add", "origin", str(bare.path))
    clone.write("conveyor.yml", PIPELINE.format(service=service, branches=branches))
    clone.commit("pipeline")
    push(clone, "main")
    return bare, clone


def push(clone: GitRepo, branch: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", "-C", str(clone.path), "push", "origin", f"HEAD:refs/heads/{branch}"],
        capture_output=True,
        text=True,
        env=git_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def install(conveyor: Conveyor, server: ServerProcess, repo: Path, *extra: str) -> str:
    """Without --token: the hook's own token is made in the data directory (the server need
    not be up yet)."""
    result = conveyor("hook", "install", str(repo), "--server", server.url, *extra)
    assert result.returncode == 0, result.output
    assert "created token hook-" in result.stdout
    return result.stdout


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.json")) if spool.is_dir() else []


def run_hook(path: Path, stdin: str = "", cwd: Path | None = None) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(path)],
        input=stdin.encode(),
        capture_output=True,
        cwd=cwd or path.parent.parent,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stderr.decode(), time.perf_counter() - started


# --- bare repositories: post-receive ------------------------------------------------------------


@pytest.mark.integration
def test_a_push_queues_a_run_that_succeeds_and_the_hook_is_fast(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path, record_property: Any
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    out = install(conveyor, server, bare.path)
    assert "pushes to main of" in out
    hook_file = bare.path / "hooks" / "post-receive"
    assert hook_file.stat().st_mode & 0o777 == 0o700  # it holds the token
    assert hook_file.read_text().startswith(f"#!{sys.executable} -IS\n")
    server.start()

    sha = clone.commit("first change")
    started = time.perf_counter()
    pushed = push(clone, "main")
    push_seconds = time.perf_counter() - started
    run = server.wait_for_run("demo", sha)
    assert run["status"] == "succeeded", run
    # Delivered at once: the hook says which run builds the push, and where to watch it.
    announced = f"conveyor: run {run['id']} of demo: {server.url}/runs/{run['id']}\n"
    assert f"remote: {announced.strip()}" in pushed.stderr  # (git pads the line with spaces)
    assert run["ref"] == "refs/heads/main"
    assert run["trigger"] == "git"
    assert spool_files(bare.path / "conveyor-spool") == []

    # The hook on its own, as git runs it (the same change again: answered as a duplicate).
    before = clone.git("rev-parse", "HEAD~1")
    times = []
    for _ in range(10):
        code, err, seconds = run_hook(hook_file, f"{before} {sha} refs/heads/main\n")
        assert (code, err) == (0, announced)
        times.append(seconds * 1000)
    record_property("hook_ms_median", round(statistics.median(times), 1))
    record_property("push_ms", round(push_seconds * 1000, 1))
    print(
        f"hook wall time: median {statistics.median(times):.1f} ms, min {min(times):.1f} ms; "
        f"git push {push_seconds * 1000:.0f} ms"
    )
    assert [r["sha"] for r in server.runs("demo")].count(sha) == 1


@pytest.mark.integration
def test_a_replayed_delivery_is_a_duplicate_not_a_second_run(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    install(conveyor, server, bare.path)
    server.start()
    before = clone.git("rev-parse", "HEAD")
    sha = clone.commit("once")
    push(clone, "main")
    run = server.wait_for_run("demo", sha)

    # The hook's delivery id is the server's own for that change: the replay is recognised.
    body = {
        "repository": str(bare.path),
        "ref": "refs/heads/main",
        "before": before,
        "after": sha,
        "delivery": hookscript.delivery_id(str(bare.path), "refs/heads/main", before, sha),
    }
    answer = httpx.post(
        f"{server.url}/api/v1/hooks/git",
        json=body,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10,
    )
    assert (answer.status_code, answer.json()["status"]) == (200, "duplicate")
    code, err, _ = run_hook(bare.path / "hooks" / "post-receive", f"{before} {sha} refs/heads/main")
    # A duplicate makes no second run: the hook names the one that built it.
    assert (code, err) == (0, f"conveyor: run {run['id']} of demo: {server.url}/runs/{run['id']}\n")

    later = clone.commit("later")  # runs are made in order: once this one is there, any
    push(clone, "main")  # second run of `sha` would be there too
    server.wait_for_run("demo", later)
    assert [r["sha"] for r in server.runs("demo")].count(sha) == 1


@pytest.mark.integration
def test_a_branch_that_is_not_watched_does_not_trigger(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path, branches="'*'")  # the pipeline takes any branch
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    out = install(conveyor, server, bare.path, "--branches", "main,release/*")
    assert "main, release/*" in out
    server.start()
    clone.git("checkout", "-q", "-b", "feature")
    feature = clone.commit("on a feature branch")
    push(clone, "feature")
    clone.git("checkout", "-q", "-b", "release/1.0")
    release = clone.commit("on a release branch")
    push(clone, "release/1.0")
    server.wait_for_run("demo", release)
    clone.git("checkout", "-q", "main")
    main = clone.commit("on main")
    push(clone, "main")
    server.wait_for_run("demo", main)
    assert feature not in [r["sha"] for r in server.runs("demo")]
    assert "feature" not in server.log.read_text()  # the hook did not even send it


@pytest.mark.integration
def test_branch_names_are_data_not_code(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path, branches="'*'")
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    install(conveyor, server, bare.path, "--branches", "*")
    canaries = [tmp_path / "x", bare.path / "x", clone.path / "x"]
    for canary in canaries:
        canary.mkdir()
    server.start()
    names = ["$(touch${IFS}pwned)", "main;rm${IFS}-rf${IFS}x", "`touch${IFS}pwned`&&x"]
    shas = {}
    for name in names:
        clone.git("checkout", "-q", "-b", name, "main")
        shas[name] = clone.commit(f"on {name}")
        push(clone, name)
    for name, sha in shas.items():
        run = server.wait_for_run("demo", sha)
        assert run["ref"] == f"refs/heads/{name}"
        assert run["status"] == "succeeded", run
    assert list(tmp_path.rglob("pwned")) == []
    assert all(canary.is_dir() for canary in canaries)


# --- the server is down: the spool ------------------------------------------------------------


@pytest.mark.integration
def test_with_the_server_down_the_push_succeeds_and_flush_delivers_later(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    # A spool outside the repository, so the server cannot pick it up itself: only the
    # flush can deliver it.
    spool = tmp_path / "elsewhere-spool"
    install(conveyor, server, bare.path, "--spool", str(spool))

    sha = clone.commit("while the server is down")
    started = time.perf_counter()
    pushed = push(clone, "main")
    assert time.perf_counter() - started < 10
    assert "queued in" in pushed.stderr
    [spooled] = spool_files(spool)
    assert json.loads(spooled.read_text())["after"] == sha
    # The hook itself exits 0 when the server is down (and queues the change again).
    before = clone.git("rev-parse", "HEAD~1")
    code, err, _ = run_hook(bare.path / "hooks" / "post-receive", f"{before} {sha} refs/heads/main")
    assert code == 0
    assert "unreachable" in err
    assert len(spool_files(spool)) == 2

    flushed = conveyor("hook", "flush", str(bare.path))
    assert flushed.returncode == 1
    assert "2 change(s) are still queued" in flushed.stderr

    server.start()
    flushed = conveyor("hook", "flush", str(bare.path))
    assert flushed.returncode == 0, flushed.output
    assert "delivered 2, 0 left" in flushed.stdout
    assert spool_files(spool) == []
    assert server.wait_for_run("demo", sha)["status"] == "succeeded"
    assert [r["sha"] for r in server.runs("demo")].count(sha) == 1


@pytest.mark.integration
def test_the_next_push_delivers_what_waited_in_the_spool(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    spool = tmp_path / "elsewhere-spool"
    install(conveyor, server, bare.path, "--spool", str(spool))
    first = clone.commit("while the server is down")
    push(clone, "main")
    assert len(spool_files(spool)) == 1

    server.start()
    second = clone.commit("once it is back")
    pushed = push(clone, "main")
    assert "delivered 1 queued change(s)" in pushed.stderr
    assert spool_files(spool) == []
    assert server.wait_for_run("demo", first)["status"] == "succeeded"
    assert server.wait_for_run("demo", second)["status"] == "succeeded"


@pytest.mark.integration
def test_the_server_picks_up_the_spool_itself_when_it_is_back(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    conveyor("service", "add", "demo", "--repo", str(bare.path), check=True)
    install(conveyor, server, bare.path)  # the default spool, inside the repository
    sha = clone.commit("while the server is down")
    push(clone, "main")
    assert len(spool_files(bare.path / "conveyor-spool")) == 1

    server.start()  # nobody pushes or flushes
    assert server.wait_for_run("demo", sha)["status"] == "succeeded"
    assert spool_files(bare.path / "conveyor-spool") == []


# --- working repositories: post-commit ----------------------------------------------------------


@pytest.mark.integration
def test_a_commit_to_main_in_a_working_repository_triggers(
    conveyor: Conveyor, server: ServerProcess, repo: GitRepo
) -> None:
    repo.write("conveyor.yml", PIPELINE.format(service="demo", branches="main"))
    repo.commit("pipeline")
    conveyor("service", "add", "demo", "--repo", str(repo.path), check=True)
    out = install(conveyor, server, repo.path)  # branches: on.push.branches at HEAD
    assert "commits to main of" in out
    for name in ("post-commit", "post-merge", "post-rewrite"):
        assert hook.is_ours(repo.path / ".git" / "hooks" / name)
    server.start()

    sha = repo.commit("on main")
    run = server.wait_for_run("demo", sha)
    assert (run["status"], run["ref"], run["trigger"]) == ("succeeded", "refs/heads/main", "git")

    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit("on feature")
    repo.git("checkout", "-q", "main")
    later = repo.commit("on main again")
    server.wait_for_run("demo", later)
    assert feature not in [r["sha"] for r in server.runs("demo")]


# --- installing ---------------------------------------------------------------------------------


def test_a_foreign_hook_is_kept_unless_forced_and_put_back_on_uninstall(
    conveyor: Conveyor, tmp_path: Path
) -> None:
    bare = GitRepo(tmp_path / "r.git")
    bare.path.mkdir()
    bare.git("init", "-q", "--bare")
    theirs = bare.write("hooks/post-receive", "#!/bin/sh\necho theirs\n", executable=True)
    args = ["hook", "install", str(bare.path), "--server", "http://127.0.0.1:9", "--token", "t0k"]
    args.append("--reuse-token")  # the server is not there to make the hook's own token

    refused = conveyor(*args)
    assert refused.returncode != 0
    assert "a hook Conveyor did not write is already there" in refused.stderr
    assert theirs.read_text() == "#!/bin/sh\necho theirs\n"

    conveyor(*args, "--force", check=True)
    assert hook.is_ours(theirs)
    assert (bare.path / "hooks" / "post-receive.before-conveyor").read_text().endswith("theirs\n")
    conveyor(*args, check=True)  # reinstalling over our own hook needs no --force

    out = conveyor("hook", "uninstall", str(bare.path), check=True).stdout
    assert "restored" in out
    assert theirs.read_text() == "#!/bin/sh\necho theirs\n"
    assert not (bare.path / "hooks" / "post-receive.before-conveyor").exists()


def test_install_needs_a_token_and_a_server_url(conveyor: Conveyor, tmp_path: Path) -> None:
    bare = GitRepo(tmp_path / "r.git")
    bare.path.mkdir()
    bare.git("init", "-q", "--bare")
    no_token = conveyor("hook", "install", str(bare.path))
    assert no_token.returncode != 0
    assert "no service is registered for repository" in no_token.output
    reuse_nothing = conveyor("hook", "install", str(bare.path), "--reuse-token")
    assert reuse_nothing.returncode != 0
    assert "--scope trigger --service SERVICE" in reuse_nothing.output
    for url in ["ftp://x", "http://", "http://h:port", "http://a b", "http://h\r\nX: y"]:
        with pytest.raises(ConveyorError):
            hook.install(bare.path, server=url, token="t")
    with pytest.raises(ConveyorError):
        hook.install(bare.path, server="http://127.0.0.1:1", token="a b\r\nX-Evil: 1")
    assert not (bare.path / "hooks" / "post-receive").exists()


CONFIGS: list[dict[str, Any]] = [
    {"hook": "post-receive", "repository": "/srv/it's \"quoted\" \\ and\nnew line'''"},
    {"hook": "post-receive", "repository": "/srv/é/🚀/\x00\x7f", "branches": ["a'b", '"]']},
    {"hook": "post-receive", "repository": "'''); import os; os.system('touch pwned'); ('"},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_configuration_is_embedded_as_data(config: dict[str, Any]) -> None:
    text = hook.render(config)
    [line] = [x for x in text.splitlines() if x.startswith(hook.CONFIG_PREFIX)]
    assert ast.literal_eval(line.removeprefix(hook.CONFIG_PREFIX)) == config
    compile(text, "hook", "exec")


def test_the_configuration_holds_plain_data_only() -> None:
    with pytest.raises(ConveyorError):
        hook.embed({"server": 1.5})
    with pytest.raises(ConveyorError):
        hook.embed({"branches": [{"a": "b"}]})


def test_a_python_path_a_shebang_cannot_hold_still_starts_the_hook(tmp_path: Path) -> None:
    odd = tmp_path / "a dir with 'quotes' and spaces" / "python"
    odd.parent.mkdir()
    odd.symlink_to(sys.executable)
    spool = tmp_path / "spool"
    script = tmp_path / "post-receive"
    config = {
        "hook": "post-receive",
        "server": "http://127.0.0.1:9",
        "token": "t",
        "repository": str(tmp_path),
        "spool": str(spool),
        "branches": [],
    }
    script.write_text(hook.render(config, python=str(odd)))
    script.chmod(0o700)
    code, err, _ = run_hook(script, f"{'1' * 40} {'2' * 40} refs/heads/main\n", cwd=tmp_path)
    assert code == 0, err
    assert "queued in" in err
    assert len(spool_files(spool)) == 1


# --- the hook script on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"ref": "refs/heads/main", "pusher": 'Zoë "z" \\ O\'Neil\t\x01\x7f 🚀'},
        {"repository": "/srv/\udcff/x", "ref": "refs/heads/$(x)"},
    ],
)
def test_to_json_is_json(change: dict[str, str]) -> None:
    expected = {k: v.encode("utf-8", "replace").decode() for k, v in change.items()}
    assert json.loads(hookscript.to_json(change)) == expected


@pytest.mark.parametrize(
    ("ref", "patterns", "expected"),
    [
        ("refs/heads/main", [], True),
        ("refs/tags/v1", [], False),
        ("refs/heads/main", ["main"], True),
        ("refs/heads/release/1.0", ["main", "release/*"], True),
        ("refs/heads/feature", ["main", "release/*"], False),
        ("refs/heads/$(touch pwned)", ["main"], False),
    ],
)
def test_watched_branches(ref: str, patterns: list[str], expected: bool) -> None:
    assert hookscript.watched(ref, patterns) is expected


def test_the_hook_exits_0_whatever_it_is_given(tmp_path: Path) -> None:
    config = {
        "hook": "post-receive",
        "server": "http://127.0.0.1:9",
        "token": "t",
        "repository": str(tmp_path),
        "spool": str(tmp_path / "spool"),
        "branches": [],
    }
    script = tmp_path / "post-receive"
    script.write_text(hook.render(config))
    script.chmod(0o700)
    for stdin in ["", "garbage\n", "\x00\xff" * 100, f"{'0' * 40} {'0' * 40} refs/heads/x\n"]:
        code, _, _ = run_hook(script, stdin, cwd=tmp_path)
        assert code == 0
    assert spool_files(tmp_path / "spool") == []  # nothing there was a change to send
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool").chmod(0o500)  # a spool it cannot write to: still exit 0
    try:
        code, err, _ = run_hook(script, f"{'1' * 40} {'2' * 40} refs/heads/main\n", cwd=tmp_path)
    finally:
        (tmp_path / "spool").chmod(0o700)
    assert code == 0
    if os.geteuid() != 0:  # root writes anyway
        assert "was not sent" in err


def test_flush_without_an_installed_hook_needs_a_server(conveyor: Conveyor, tmp_path: Path) -> None:
    bare = GitRepo(tmp_path / "r.git")
    bare.path.mkdir()
    bare.git("init", "-q", "--bare")
    result = conveyor("hook", "flush", str(bare.path))
    assert result.returncode != 0
    assert "no Conveyor hook is installed" in result.stderr


def test_a_spooled_file_that_is_not_a_change_is_set_aside(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001-1-a.json").write_text('{"ref": 1}')
    (spool / "00000000000000000002-1-b.json").write_text("not json")
    change = hookscript.make_change(str(tmp_path), "refs/heads/main", "1" * 40, "2" * 40, None)
    hookscript.spool(str(spool), change)
    config: dict[str, object] = {"server": "http://127.0.0.1:9", "token": "t", "spool": str(spool)}
    delivered, rejected, left, problem = hookscript.deliver_spool(config)
    assert (delivered, rejected, left) == (0, 2, 1)
    assert problem is not None
    assert "unreachable" in problem
    assert len(list(spool.glob("*.rejected"))) == 2
    [kept] = spool_files(spool)
    assert json.loads(kept.read_text()) == change
