"""The sandbox of pipeline code (conveyor.sandbox, decision 0010), against real processes: a job
step, a deploy `start:` and `verify:` command, a `health.command` and a `command` target replay
what a hostile commit would try (read the server's secrets file, its database, its process's
environment, another service's workspace; write outside their folder; find the server's
settings in their environment) and every attempt fails. A job over the runner's process or
file-size limit is stopped saying so, a pipeline cannot raise the log or time ceilings, and what
a normal job needs (git, python3, sh, its workspace, artifacts) still works; a release started by
`start:` outlives the server, a job's processes do not.

Without bubblewrap these tests skip, except in CI (CI=true), where they fail: CI installs it.
Nothing here sleeps to synchronise: waits poll a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.sandbox import (
    INSTALL,
    NOBODY,
    Limits,
    Sandbox,
    SandboxUnavailable,
    configure,
)
from conveyor.targets.base import ReleaseBundle, TargetContext, TargetError
from conveyor.targets.command import CommandTarget
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import APP, stop_released_processes
from tests.security.conftest import limited, unavailable
from tests.serverproc import (
    AgentProcess,
    Process,
    ServerProcess,
    clean_env,
    conveyor_argv,
    free_port,
    until,
)

ROOT = os.geteuid() == 0
# What a pipeline is given (the engine's variables): any other CONVEYOR_* name in a step's
# environment would be the server's own.
JOB_VARIABLES = {
    "CONVEYOR",
    "CONVEYOR_RUN_ID",
    "CONVEYOR_SERVICE",
    "CONVEYOR_SHA",
    "CONVEYOR_SHORT_SHA",
    "CONVEYOR_JOB",
    "CONVEYOR_REF",
    "CONVEYOR_BRANCH",
    "CONVEYOR_REGISTRY",
    "CONVEYOR_WORKSPACE",
    "CONVEYOR_STEP",
    "CONVEYOR_ATTEMPT",
    "CONVEYOR_STEP_ATTEMPT",
    "CONVEYOR_ENVIRONMENT",
    "CONVEYOR_TIER",
    "CONVEYOR_RELEASE",
    "CONVEYOR_RELEASE_ID",
    "CONVEYOR_RELEASE_DIR",
    "CONVEYOR_DEPLOY_URL",
    "CONVEYOR_IMAGE",
    "CONVEYOR_IMAGES",
    "CONVEYOR_PREVIOUS_RELEASE",
    "CONVEYOR_DATA_DIR",
}
# Settings of the server process that must never reach pipeline code.
SERVER_SETTINGS = {
    "VIRTUAL_ENV": "/opt/conveyor-venv-marker",
    "CONVEYOR_PROMETHEUS_URL": "http://user:server-setting-0417@127.0.0.1:9",
}
SECRET_FILE_VALUE = "secrets-file-value-0419"


def attacks(home: Path, server_pid: int, other: Path, tmp_name: str) -> str:
    """POSIX shell that tries each attack and prints `LEAKED <what>` or `blocked <what>`, then
    what it sees of the data directory, and its environment (`env: NAME=...` lines)."""
    probes = {
        "secrets-file": f"cat '{home}/secrets.env'",
        "database": f"cat '{home}/conveyor.db'",
        "server-environ": f"cat /proc/{server_pid}/environ",
        "server-process": f"test -e /proc/{server_pid}/cmdline",
        "other-workspace": f"ls '{other}'",
        "other-workspace-file": f"cat '{other}/victim-secret.txt'",
        "write-usr": "touch /usr/local/pwned",
        "write-etc": "touch /etc/pwned",
    }
    if ROOT:
        # As nobody. (Run by another user, these would write to the sandbox's own empty
        # folders, which is harmless: what counts is that nothing appears on the machine.)
        probes["shadow"] = "cat /etc/shadow"
        probes["write-home"] = f"touch '{home}/pwned'"
        probes["write-root"] = "touch /pwned"
    lines = [
        'probe() { if ( eval "$2" ) >/dev/null 2>&1; then echo "LEAKED $1"; '
        'else echo "blocked $1"; fi; }'
    ]
    lines += [f'probe {name} "{command}"' for name, command in probes.items()]
    lines += [
        f"touch '{home}/pwned' /pwned 2>/dev/null || true",  # whatever happens: not on the host
        f"touch /tmp/{tmp_name}",  # the sandbox's own /tmp: not the machine's
        f'echo "home holds: $(ls -A \'{home}\' | tr "\\n" " ")"',
        'env | sort | sed "s/^/env: /"',
    ]
    return "\n".join(lines) + "\n"


def verdicts(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        word, _, what = line.strip().partition(" ")
        if word in ("LEAKED", "blocked"):
            found[what] = word
    return found


def assert_contained(
    text: str, *, home: Path, tmp_name: str, writable: Path, data: Path | None = None
) -> None:
    """Every attack in `text` (the output of `attacks`) failed, and nothing leaked out;
    ``data``: a second writable folder (a release's $CONVEYOR_DATA_DIR)."""
    seen = verdicts(text)
    assert seen, text
    assert set(seen.values()) == {"blocked"}, seen
    environment = dict(
        line.strip().removeprefix("env: ").split("=", 1)
        for line in text.splitlines()
        if line.strip().startswith("env: ") and "=" in line
    )
    assert "VIRTUAL_ENV" not in environment
    assert not {k for k in environment if k.startswith("CONVEYOR_")} - JOB_VARIABLES, environment
    assert SECRET_FILE_VALUE not in text
    for value in SERVER_SETTINGS.values():
        assert value not in text
    assert environment["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert environment["HOME"] == str(writable)
    # The data directory shows only the way down to the command's own folders.
    [shown] = [line for line in text.splitlines() if line.strip().startswith("home holds:")]
    folders = [writable] if data is None else [writable, data]
    assert sorted(shown.split(":", 1)[1].split()) == sorted(
        {folder.relative_to(home).parts[0] for folder in folders}
    )
    assert not (home / "pwned").exists()
    assert not Path("/pwned").exists()
    assert not Path("/usr/local/pwned").exists()
    assert not Path("/etc/pwned").exists()
    assert not Path("/tmp", tmp_name).exists()  # the machine's /tmp


def job_text(server: ServerProcess, run_id: int, job: str) -> str:
    return "\n".join(line["text"] for line in server.logs(run_id, job))


def open_fifo(fifo: Path) -> None:
    """Write a line to the FIFO a step reads (waiting, bounded, for it to open it)."""

    def writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return None
            raise

    fd = until(writer, 15, f"a step to read {fifo.name}")
    assert fd is not None
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def command_lines(argv: bytes) -> list[int]:
    """Processes of this machine with exactly this command line (NUL-separated)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "cmdline").read_bytes() == argv:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in started:
            if server.process is not None and server.process.alive():
                server.process.kill9()
            server.http.close()
            stop_released_processes(server.home)


def start_server(
    servers: list[ServerProcess], home: Path, *, runners: int = 2, **settings: str
) -> ServerProcess:
    server = ServerProcess(home, runners=runners)
    server.env.update(SERVER_SETTINGS)
    server.env.update(settings)
    server.admin = server.token("admin", "admin")
    servers.append(server)
    server.start()
    # The secrets file of earlier versions: exactly what a step must not read.
    (home / "secrets.env").write_text(f"API_TOKEN={SECRET_FILE_VALUE}\n")
    return server


# --- job steps -----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_job_step_cannot_reach_the_server_its_data_or_another_services_workspace(
    sandbox: Sandbox, servers: list[ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server = start_server(servers, home)
    health = server.api("GET", "/health").json()
    assert health["sandbox"] == "bubblewrap"
    assert health["limits"] == ("job" if sandbox.per_job else "process"), health
    assert server.process is not None
    victim_repo, attacker_repo = GitRepo(tmp_path / "victim"), GitRepo(tmp_path / "attacker")
    for repo in (victim_repo, attacker_repo):
        repo.path.mkdir()
        repo.git("init", "-q", "-b", "main")
    # Another service's job, holding a file of its own while the attack runs.
    victim_repo.commit(
        "hold",
        {
            "conveyor.yml": """
            service: victim
            jobs:
              hold:
                shell: sh
                run: |
                  echo victim-only > victim-secret.txt
                  mkfifo gate
                  read line < gate
            """
        },
    )
    other = home / "workspaces" / "run-1" / "hold"
    tmp_name = f"conveyor-pwned-{uuid.uuid4().hex}"
    script = attacks(home, server.process.pid, other, tmp_name)
    attacker_repo.commit(
        "attack",
        {
            "attack.sh": script,
            "conveyor.yml": """
            service: attacker
            jobs:
              attack:
                shell: sh
                run: sh attack.sh
              build:
                run: |
                  git --version
                  python3 -c 'import sys; print("python", sys.version_info.major)'
                  sh -c 'echo "sh works"'
                  echo "uid $(id -u)"
                  mkdir -p dist && echo "built by a sandboxed job" > dist/out.txt
                artifacts: [dist/out.txt]
            """,
        },
    )
    server.add_service("victim", victim_repo.path)
    server.add_service("attacker", attacker_repo.path)

    held = server.trigger("victim")["id"]
    until((other / "gate").exists, 30, "the victim's job to hold its workspace")
    run = server.wait_run(server.trigger("attacker")["id"], 60)

    assert run["status"] == "succeeded", run
    attack = job_text(server, run["id"], "attack")
    workspace = home / "workspaces" / f"run-{run['id']}" / "attack"
    assert_contained(attack, home=home, tmp_name=tmp_name, writable=workspace)
    assert "env: CONVEYOR_WORKSPACE=" in attack
    build = job_text(server, run["id"], "build")
    assert "git version" in build
    assert "python 3" in build
    assert "sh works" in build
    assert f"uid {NOBODY if ROOT else os.geteuid()}" in build
    [artifact] = run["artifacts"]
    assert (artifact["job"], artifact["path"]) == ("build", "dist/out.txt")
    assert (other / "victim-secret.txt").read_text() == "victim-only\n"

    open_fifo(other / "gate")
    assert server.wait_run(held, 30)["status"] == "succeeded"


def test_assert_contained_compares_the_data_directory_listing(tmp_path: Path) -> None:
    # The helper above reads "home holds:" as the one folder on the way to the workspace.
    text = (
        "blocked secrets-file\nhome holds: workspaces \nenv: PATH=/usr/local/sbin:/usr/local/bin:"
        f"/usr/sbin:/usr/bin:/sbin:/bin\nenv: HOME={tmp_path / 'workspaces'}\n"
    )
    assert_contained(text, home=tmp_path, tmp_name="x", writable=tmp_path / "workspaces")
    with pytest.raises(AssertionError):
        assert_contained(
            text.replace("blocked", "LEAKED"),
            home=tmp_path,
            tmp_name="x",
            writable=tmp_path / "workspaces",
        )


@pytest.mark.integration
def test_an_agents_job_sees_neither_its_token_nor_its_process_and_the_agent_says_so(
    sandbox: Sandbox, servers: list[ServerProcess], tmp_path: Path, repo: GitRepo
) -> None:
    server = start_server(servers, tmp_path / "home", runners=0)
    token = server.token("agents", "runner")
    agent = AgentProcess(server, token, "boxed")
    try:
        until(lambda: "sandbox: bubblewrap" in agent.stderr(), 20, "the agent to report it")
        repo.commit(
            "pipeline",
            {
                "conveyor.yml": f"""
                service: remote
                jobs:
                  look:
                    shell: sh
                    run: |
                      cat /proc/{agent.pid}/environ && echo "LEAKED agent-environ" || true
                      ls -A "{agent.work_dir}/sources" && echo "LEAKED agent-sources" || true
                      test -e "{agent.work_dir}/agent.lock" && echo "LEAKED agent-lock" || true
                      env | sort
                """
            },
        )
        server.add_service("remote", repo.path)
        run = server.wait_run(server.trigger("remote")["id"], 60)
        assert run["status"] == "succeeded", run
        text = job_text(server, run["id"], "look")
        assert "LEAKED" not in text
        assert token not in text
        assert "CONVEYOR_TOKEN" not in text
        assert "CONVEYOR_URL" not in text
    finally:
        agent.kill9()


@pytest.mark.integration
def test_a_job_dies_with_the_server_that_runs_it(
    sandbox: Sandbox, servers: list[ServerProcess], tmp_path: Path, repo: GitRepo
) -> None:
    duration = f"301.{os.getpid()}"
    repo.commit(
        "pipeline",
        {"conveyor.yml": f"service: hang\njobs:\n  hang:\n    run: exec sleep {duration}\n"},
    )
    server = start_server(servers, tmp_path / "home", runners=1)
    server.add_service("hang", repo.path)
    server.trigger("hang")
    marker = f"sleep\0{duration}\0".encode()
    until(lambda: command_lines(marker), 30, "the step to start")
    server.kill9()
    until(lambda: not command_lines(marker), 10, "the step to die with the server")


# --- deploy commands and checks --------------------------------------------------------------


@pytest.mark.integration
def test_start_verify_and_health_commands_are_contained_and_the_release_outlives_the_server(
    sandbox: Sandbox, servers: list[ServerProcess], tmp_path: Path, repo: GitRepo
) -> None:
    home = tmp_path / "home"
    server = start_server(servers, home, runners=1)
    assert server.process is not None
    tmp_name = f"conveyor-pwned-{uuid.uuid4().hex}"
    other = home / "workspaces"
    script = attacks(home, server.process.pid, other, tmp_name)
    # Each command writes what it saw into the release folder (its only writable one).
    repo.commit(
        "v1",
        {
            "app.py": APP,
            "VERSION": "v1",
            "HEALTHY": "yes",
            "attack.sh": script,
            "conveyor.yml": """\
service: shop
jobs:
  test:
    run: "true"
environments:
  staging:
    deploy:
      target: process
      start: sh attack.sh > start.txt 2>&1; echo "$PORT" > port.txt; exec python3 app.py
    health:
      command: { run: sh attack.sh > health.txt 2>&1, within: 10s, interval: 100ms }
    verify:
      - run: sh attack.sh > verify.txt 2>&1
""",
        },
    )
    server.add_service("shop", repo.path)
    server.trigger("shop")

    def deployed() -> list[dict[str, Any]]:
        found = server.api("GET", "/deployments", params={"service": "shop"}).json()
        return [d for d in found if d["status"] in ("succeeded", "failed", "rolled_back")]

    [deployment] = until(deployed, 60, "the deployment to end")
    assert deployment["status"] == "succeeded", deployment
    release = home / "releases" / "shop" / "1"
    for name in ("start", "health", "verify"):
        # The release itself may write its environment's data folder too; nothing else.
        data = home / "deploy" / "shop" / "staging" / "data" if name == "start" else None
        text = (release / f"{name}.txt").read_text()
        assert_contained(text, home=home, tmp_name=tmp_name, writable=release, data=data)

    # The release is bubblewrap's process group, in no server's: it outlives a kill -9.
    port = int((release / "port.txt").read_text())
    leaders = [
        int(e.name)
        for e in os.scandir("/proc")
        if e.name.isdigit() and _leads_in(int(e.name), release)
    ]
    assert len(leaders) == 1, leaders
    server.kill9()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "v1"
    assert _leads_in(leaders[0], release)
    os.killpg(leaders[0], signal.SIGKILL)


def _leads_in(pid: int, folder: Path) -> bool:
    """Whether live process `pid` leads its process group and runs in `folder`."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return (
            state != "Z"
            and os.getpgid(pid) == pid
            and os.readlink(f"/proc/{pid}/cwd") == str(folder)
        )
    except OSError:
        return False


def test_a_command_targets_commands_are_contained(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "deploy").mkdir(parents=True)
    (home / "secrets.env").write_text(f"API_TOKEN={SECRET_FILE_VALUE}\n")
    (home / "conveyor.db").write_text("not for pipelines\n")
    root = home / "releases" / "web" / "1"
    root.mkdir(parents=True)
    tmp_name = f"conveyor-pwned-{uuid.uuid4().hex}"
    lines: list[str] = []
    ctx = TargetContext(
        service="web",
        environment="production",
        tier="production",
        options={"deploy": attacks(home, os.getpid(), home / "workspaces", tmp_name)},
        env={"CONVEYOR_ENVIRONMENT": "production"},
        state_dir=home / "deploy" / "web" / "production",
        log=lines.append,
        sandbox=sandbox,
    )
    bundle = ReleaseBundle(release_id=1, service="web", sha="a" * 40, root=root)
    for name, value in SERVER_SETTINGS.items():
        monkeypatch.setenv(name, value)
    asyncio.run(CommandTarget(ctx).deploy(bundle, None))
    assert_contained("\n".join(lines), home=home, tmp_name=tmp_name, writable=root)


def test_a_command_that_cannot_be_sandboxed_fails_the_deployment_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server given no sandbox configures one from its environment: here, no bubblewrap.
    nowhere = tmp_path / "empty-path"
    nowhere.mkdir()
    monkeypatch.setenv("PATH", str(nowhere))
    root = tmp_path / "release"
    root.mkdir()
    ctx = TargetContext(
        service="web",
        environment="production",
        tier="production",
        options={"deploy": "echo never"},
        env={},
        state_dir=tmp_path / "state",
        log=lambda line: None,
    )
    bundle = ReleaseBundle(release_id=1, service="web", sha="a" * 40, root=root)
    with pytest.raises(TargetError) as failed:
        asyncio.run(CommandTarget(ctx).deploy(bundle, None))
    assert failed.value.message.startswith(
        "deploy command could not run: cannot sandbox pipeline code: bubblewrap (bwrap) is not "
        "installed"
    )


# --- limits ------------------------------------------------------------------------------------


def failed_job(conveyor: Conveyor, job: str) -> dict[str, Any]:
    data: dict[str, Any] = conveyor("show", "1", "--json", check=True).json()
    return next(j for j in data["jobs"] if j["name"] == job)


@pytest.mark.integration
def test_a_job_writing_a_file_over_the_limit_is_stopped_saying_so(
    sandbox: Sandbox, repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": """
            service: big
            jobs:
              fill:
                run: head -c 3000000 /dev/zero > big.bin
            """
        },
    )
    result = limited(conveyor, file_size="1M")("run")
    assert result.returncode == 1, result.output
    job = failed_job(conveyor, "fill")
    assert "a file it wrote reached this runner's limit of 1.0 MiB" in job["reason"], job


@pytest.mark.integration
def test_a_job_starting_processes_over_the_limit_is_stopped_saying_so(
    sandbox: Sandbox, repo: GitRepo, conveyor: Conveyor
) -> None:
    duration = f"302.{os.getpid()}"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: forks
            jobs:
              bomb:
                shell: sh
                run: |
                  for i in $(seq 200); do sleep {duration} & done
                  wait
            """
        },
    )
    result = limited(conveyor, processes="32")("run", timeout=120)
    assert result.returncode == 1, result.output
    job = failed_job(conveyor, "bomb")
    per_job = " per job" if sandbox.per_job else ""
    assert f"it could not start more processes (this runner allows 32{per_job})" in job["reason"]
    assert not command_lines(f"sleep\0{duration}\0".encode())  # all gone with the step


@pytest.mark.integration
def test_a_pipeline_cannot_raise_the_log_or_time_ceilings(
    sandbox: Sandbox, repo: GitRepo, conveyor: Conveyor
) -> None:
    duration = f"303.{os.getpid()}"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: greedy
            defaults: {{ log_limit: 1GiB, timeout: 10h }}
            jobs:
              chatty:
                run: for i in $(seq 20000); do echo "line $i of a chatty step"; done
              slow:
                run: exec sleep {duration}
            """
        },
    )
    result = limited(conveyor, log="64k", job_time="2s")("run", timeout=120)
    assert result.returncode == 1, result.output
    chatty = conveyor("logs", "1", "chatty", check=True).stdout
    assert "log_limit 1.0 GiB is above this runner's ceiling of 64.0 KiB" in chatty
    assert "output truncated after 64.0 KiB" in chatty
    assert "line 20000 of a chatty step" not in chatty
    slow = failed_job(conveyor, "slow")
    assert slow["reason"] == "step slow timed out after 2s", slow
    assert "above this runner's ceiling of 2s" in conveyor("logs", "1", "slow").stdout
    assert not command_lines(f"sleep\0{duration}\0".encode())


# --- a runner that cannot sandbox --------------------------------------------------------------


def test_without_bubblewrap_the_sandbox_names_the_fix_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable) as missing:
        configure(environ={"PATH": str(tmp_path)})
    message = str(missing.value)
    assert "\n" not in message
    assert INSTALL in message
    assert "--unsafe-no-sandbox" in message


def test_a_bubblewrap_that_fails_its_probe_is_refused_with_its_reason(tmp_path: Path) -> None:
    if ROOT and shutil.which("setpriv") is None:
        unavailable("util-linux (setpriv) is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    (fake / "bwrap").chmod(0o755)
    with pytest.raises(SandboxUnavailable) as failed:
        configure(environ={"PATH": f"{fake}:/usr/bin:/bin"})
    message = str(failed.value)
    assert "\n" not in message
    assert "No permissions to create new namespace" in message
    assert "user namespaces" in message
    assert "--unsafe-no-sandbox" in message


def test_the_operator_may_opt_out_and_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    off = configure(environ={"PATH": str(tmp_path), "CONVEYOR_SANDBOX": "off"})
    assert (off.mode, off.enabled) == ("off", False)
    assert configure(disabled=True, environ={"PATH": str(tmp_path)}).mode == "off"
    with pytest.raises(Exception, match="CONVEYOR_SANDBOX must be bubblewrap or off"):
        configure(environ={"CONVEYOR_SANDBOX": "maybe"})


def test_limits_come_from_the_operator_and_bad_values_are_refused() -> None:
    limits = Limits.from_env(
        {
            "CONVEYOR_LIMIT_MEMORY": "2G",
            "CONVEYOR_LIMIT_PROCESSES": "64",
            "CONVEYOR_LIMIT_FILE_SIZE": "512MiB",
            "CONVEYOR_LIMIT_JOB_TIME": "90m",
            "CONVEYOR_LIMIT_LOG": "1mb",
        }
    )
    assert limits.memory == 2 * 2**30
    assert limits.processes == 64
    assert limits.file_size == 512 * 2**20
    assert limits.job_time == 5400
    assert limits.log_bytes == 1_000_000
    assert Limits.from_env({}) == Limits()
    with pytest.raises(
        Exception, match="CONVEYOR_LIMIT_PROCESSES must be a whole number of processes, got 'lots'"
    ):
        Limits.from_env({"CONVEYOR_LIMIT_PROCESSES": "lots"})


def test_an_environment_is_built_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", SERVER_SETTINGS["VIRTUAL_ENV"])
    env = Sandbox.off().environment(Path("/w"), {"CONVEYOR_RUN_ID": "1", "A": "b"})
    tz = {"TZ": os.environ["TZ"]} if os.environ.get("TZ") else {}
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/w",
        "LANG": "C.UTF-8",
        **tz,
        "CONVEYOR_RUN_ID": "1",
        "A": "b",
    }


def test_a_pipelines_loader_variables_never_reach_the_helpers_that_run_as_root(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # LD_PRELOAD naming a library the step built would run its code in bubblewrap or setpriv,
    # which run as root: they get a fixed environment; bash reads the step's later.
    root = tmp_path / "ws"
    root.mkdir()
    env = {"LD_PRELOAD": str(root / "evil.so"), "GCONV_PATH": str(root), "SECRET": "s3cr3t"}
    with sandbox.launch(["sh", "-c", 'echo "$SECRET $LD_PRELOAD"'], env=env, root=root) as run:
        assert set(run.env) <= {"PATH", "LANG", "BASH_ENV", "CONVEYOR_RUN_ID", "TZ"}
        assert not any("s3cr3t" in a for a in run.argv)
        sandbox.claim(root)
        done = run.run(timeout=30)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert stdout == f"s3cr3t {root / 'evil.so'}\n", stderr
    # Only the step's own program (sh) tried to load the library, and said so: no helper did.
    assert stderr.count("from LD_PRELOAD cannot be preloaded") == 1, stderr


@pytest.mark.integration
def test_a_server_or_runner_that_cannot_sandbox_refuses_to_start_unless_told(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    nowhere = tmp_path / "empty-path"
    nowhere.mkdir()
    env = clean_env(CONVEYOR_HOME=str(home), PATH=str(nowhere))
    for argv in (
        conveyor_argv("server", "--port", "0"),
        conveyor_argv("runner", "--server", "http://127.0.0.1:9", "--token", "x"),
    ):
        refused = subprocess.run(
            argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: cannot sandbox pipeline code: bubblewrap (bwrap)"), line
        assert INSTALL in line
        assert "--unsafe-no-sandbox" in line

    # Told (by the flag, or by CONVEYOR_SANDBOX=off): it starts, warns, and tells monitoring.
    for told, extra in ((["--unsafe-no-sandbox"], {}), ([], {"CONVEYOR_SANDBOX": "off"})):
        port = free_port()
        server = Process(
            conveyor_argv("server", "--port", str(port), "--runners", "0", *told),
            {**env, **extra},
            tmp_path / "logs" / f"server-{port}",
            tmp_path,
        )
        try:
            health = until(functools.partial(_health, port), 20, "the server to answer")
            assert health is not None
            assert health["sandbox"] == "off"
            assert "pipeline code runs as this user" in server.stderr()
        finally:
            server.stop()


def _health(port: int) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/api/v1/health").json()
        return answer
    except httpx.HTTPError:
        return None


def test_job_and_deploy_modules_import_the_sandbox_not_the_other_way_round() -> None:
    # conveyor.sandbox is a leaf: it imports nothing of conveyor but its errors, the control
    # groups and the settings (leaves of their own).
    package = Path(__file__).parents[2] / "src" / "conveyor"

    def imports(name: str) -> set[str]:
        return {
            line.split()[1]
            for line in (package / name).read_text().splitlines()
            if line.startswith(("import conveyor", "from conveyor"))
        }

    assert imports("sandbox.py") == {"conveyor.errors", "conveyor.cgroups", "conveyor.settings"}
    assert imports("cgroups.py") == set()


def test_the_sandbox_runs_as_nobody_when_root_and_gives_it_the_folder(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file").write_text("x")
    sandbox.claim(root)
    with sandbox.launch(
        ["sh", "-c", "id -u; echo y >> sub/file; touch new"], env={}, root=root
    ) as run:
        done = run.run(timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(NOBODY if ROOT else os.geteuid())
    assert (root / "sub" / "file").read_text() == "xy\n"
    if ROOT:
        assert (root / "new").stat().st_uid == NOBODY
    assert done.stderr == b""
