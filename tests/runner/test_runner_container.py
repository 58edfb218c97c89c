"""`image:` on a job: its steps run in a container through podman (or docker).

The first half checks the pieces (engine choice, the `run` command line, names, cleanup) with
stand-in engines; the second runs real pipelines through the `conveyor` command and the real
podman of tests/podman.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Conveyor, GitRepo
from tests.podman import IMAGE, Podman, podman_session  # noqa: F401

from conveyor.errors import ConveyorError
from conveyor.runner.container import (
    ENGINE_VARIABLE,
    client_env,
    container_argv,
    container_engine,
    container_name,
    remove_container,
    step_variables,
)


def fake_engine(folder: Path, name: str, script: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


# --- container_engine ------------------------------------------------------------------------


def test_engine_prefers_podman_then_docker(tmp_path: Path) -> None:
    both, docker_only = tmp_path / "both", tmp_path / "docker-only"
    fake_engine(both, "podman")
    fake_engine(both, "docker")
    fake_engine(docker_only, "docker")

    assert container_engine({"PATH": str(both)}) == "podman"
    assert container_engine({"PATH": str(docker_only)}) == "docker"


def test_engine_variable_wins(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_engine(bin_dir, "podman")
    docker = fake_engine(tmp_path / "elsewhere", "docker")

    env = {"PATH": str(bin_dir)}
    assert container_engine(env, "podman") == "podman"
    assert container_engine(env, str(docker)) == str(docker)


def test_no_engine_is_a_clear_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        container_engine({"PATH": str(tmp_path)})
    assert "neither podman nor docker" in caught.value.message
    assert ENGINE_VARIABLE in (caught.value.hint or "")

    with pytest.raises(ConveyorError, match=f"'nerdctl' \\({ENGINE_VARIABLE}\\) not found"):
        container_engine({"PATH": str(tmp_path)}, "nerdctl")


# --- container_argv ---------------------------------------------------------------------------


def argv_for(
    tmp_path: Path, env: dict[str, str], *, workdir: str = "", step: list[str] | None = None
) -> list[str]:
    return container_argv(
        "podman",
        "localhost/app:1.0",
        step or ["sh", "-e", "-c", "make test"],
        workspace=tmp_path,
        env=env,
        workdir=workdir,
        name="conveyor-1-build-test-1-abcd",
    )


def test_argv_mounts_the_workspace_and_passes_names_not_values(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, {"CI": "true", "TOKEN": "hunter2-secret", "CONVEYOR_SHA": "abc"})

    assert argv == [
        "podman",
        "run",
        "--rm",
        "--name",
        "conveyor-1-build-test-1-abcd",
        "--network",
        "host",
        "--init",
        "-v",
        f"{tmp_path.resolve()}:/workspace:Z",
        "-w",
        "/workspace",
        "-e",
        "CI",
        "-e",
        "CONVEYOR_SHA",
        "-e",
        "TOKEN",
        "localhost/app:1.0",
        "sh",
        "-e",
        "-c",
        "make test",
    ]
    assert not any("hunter2" in arg for arg in argv)


def test_argv_workspace_variable_is_the_mount_point(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, {"CONVEYOR_WORKSPACE": str(tmp_path)})
    assert "CONVEYOR_WORKSPACE=/workspace" in argv
    assert str(tmp_path) not in argv[argv.index("-w") :]


def test_argv_variables_the_client_reads_are_given_literally(tmp_path: Path) -> None:
    # The client keeps the runner's PATH and HOME; the step's own values travel on the line.
    variables = {"PATH": "/opt/tool/bin:/usr/bin", "HOME": "/home/ci", "TOKEN": "x"}
    argv = argv_for(tmp_path, variables)
    assert "PATH=/opt/tool/bin:/usr/bin" in argv
    assert "HOME=/home/ci" in argv

    client = client_env({"PATH": "/usr/sbin:/usr/bin", "HOME": "/root"}, variables)
    assert client == {"PATH": "/usr/sbin:/usr/bin", "HOME": "/root", "TOKEN": "x"}


@pytest.mark.parametrize(
    ("workdir", "target"),
    [("", "/workspace"), ("app", "/workspace/app"), ("app/./src/", "/workspace/app/src")],
)
def test_argv_working_directory(tmp_path: Path, workdir: str, target: str) -> None:
    argv = argv_for(tmp_path, {}, workdir=workdir)
    assert argv[argv.index("-w") + 1] == target


def test_argv_refuses_to_leave_the_workspace(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError, match="outside the workspace"):
        argv_for(tmp_path, {}, workdir="../etc")


@pytest.mark.parametrize("image", ["--privileged", "", "app latest", "-v/:/host"])
def test_argv_refuses_an_image_that_is_not_a_reference(tmp_path: Path, image: str) -> None:
    with pytest.raises(ConveyorError, match="invalid image reference"):
        container_argv(
            "podman", image, ["sh"], workspace=tmp_path, env={}, workdir="", name="conveyor-x"
        )


def test_argv_refuses_a_workspace_path_the_mount_cannot_express(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    with pytest.raises(ConveyorError, match="cannot mount the workspace"):
        argv_for(odd, {})


def test_bash_steps_say_so_when_the_image_has_no_bash(tmp_path: Path) -> None:
    bash_argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "false | true"]
    argv = argv_for(tmp_path, {}, step=bash_argv)
    inside = argv[argv.index("localhost/app:1.0") + 1 :]
    assert inside[:2] == ["sh", "-c"]
    assert inside[-len(bash_argv) :] == bash_argv

    # Run the same command on this host: with bash it is exactly the bash step (pipefail on) ...
    with_bash = subprocess.run(inside, capture_output=True, text=True, check=False)
    assert with_bash.returncode == 1, with_bash.stderr
    # ... and where there is no bash, one clear line and exit 127.
    no_bash = tmp_path / "no-bash"
    no_bash.mkdir()
    for tool in ("sh", "echo"):
        (no_bash / tool).symlink_to(f"/bin/{tool}")
    without = subprocess.run(
        ["/bin/sh", *inside[1:]],
        env={"PATH": str(no_bash)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert without.returncode == 127
    assert "the image has no bash: give the job or the step `shell: sh`" in without.stderr


# --- names, variables, cleanup ---------------------------------------------------------------


def test_names_are_sanitised_and_unique_per_attempt() -> None:
    name = container_name(12, "build", "run tests: unit/äöü", 2)
    prefix, _, suffix = name.rpartition("-")
    assert prefix == "conveyor-12-build-run-tests-unit-2"
    assert len(suffix) == 8
    assert container_name(12, "build", "run tests: unit/äöü", 2) != name
    assert container_name(1, "j", "-.-", 1).startswith("conveyor-1-j-x-1-")
    long = container_name(1, "job", "x" * 500, 1)
    assert len(long) < 80


def test_only_the_steps_own_variables_go_in() -> None:
    env = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "CI": "true",
        "CONVEYOR": "true",
        "CONVEYOR_SHA": "abc",
        "GREETING": "hello",
        "TOKEN": "s",
    }
    assert step_variables(env, ["GREETING", "TOKEN"]) == {
        "CI": "true",
        "CONVEYOR": "true",
        "CONVEYOR_SHA": "abc",
        "GREETING": "hello",
        "TOKEN": "s",
    }


def test_remove_container_calls_the_engine_and_ignores_failures(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    podman = fake_engine(tmp_path / "a", "podman", f'echo "$@" >> {calls}; echo "$5"')
    docker = fake_engine(tmp_path / "b", "docker", f'echo "$@" >> {calls}; exit 1')

    assert asyncio.run(remove_container(str(podman), "conveyor-1-a-b-1-x")) is True
    assert asyncio.run(remove_container(str(docker), "conveyor-1-a-b-1-x")) is False
    assert asyncio.run(remove_container(str(tmp_path / "missing"), "conveyor-x")) is False
    assert calls.read_text().splitlines() == [
        "rm --force --time 0 --ignore conveyor-1-a-b-1-x",
        "rm --force conveyor-1-a-b-1-x",
    ]


def test_remove_container_gives_up_on_a_hung_engine(tmp_path: Path) -> None:
    hung = fake_engine(tmp_path, "podman", "exec sleep 30")
    started = time.monotonic()
    assert asyncio.run(remove_container(str(hung), "conveyor-x", timeout=0.5)) is False
    assert time.monotonic() - started < 5


# --- real pipelines through podman -------------------------------------------------------------


@pytest.fixture
def boxed(conveyor: Conveyor, podman: Podman) -> Iterator[Conveyor]:
    """The `conveyor` command, using the test podman (docker is on this machine's PATH too)."""
    conveyor.extra_env[ENGINE_VARIABLE] = "podman"
    conveyor.extra_env["HOST_ONLY_MARKER"] = "from-the-host"
    yield conveyor
    assert podman.containers() == []


def set_secret(conveyor: Conveyor, service: str, name: str, value: str) -> None:
    value_file = conveyor.cwd.parent / f"{name}.value"
    value_file.write_text(value)
    conveyor("secret", "set", service, name, "--value-file", str(value_file), check=True)


@pytest.mark.integration
def test_steps_run_in_the_container_and_share_the_workspace(repo: GitRepo, boxed: Conveyor) -> None:
    secret = "c0nta1ner-s3cret"
    set_secret(boxed, "shop", "API_TOKEN", secret)
    assert Path("/etc/debian_version").exists()  # the host is Debian; the image is not
    sha = repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              box:
                image: {IMAGE}
                shell: sh
                env:
                  TOKEN: ${{{{ secrets.API_TOKEN }}}}
                  GREETING: hello
                steps:
                  - name: where
                    run: |
                      cat /etc/os-release || uname -a
                      test -e /etc/debian_version && echo on-the-host || echo in-container
                      echo "cwd=$(pwd) workspace=$CONVEYOR_WORKSPACE"
                      echo "host=${{HOST_ONLY_MARKER:-absent}} home=$HOME"
                  - name: write
                    run: mkdir -p out && echo "written by $CONVEYOR_STEP" > out/result.txt
                  - name: read
                    working_directory: out
                    env:
                      STEP_ONLY: yes
                    run: |
                      echo "read: $(cat result.txt) in $(pwd)"
                      echo "sha=$CONVEYOR_SHA token=$TOKEN greeting=$GREETING step=$STEP_ONLY"
                      echo "artifact from the container" > report.txt
                artifacts: [out/*.txt]
            """
        },
    )
    result = boxed("run", timeout=120)
    assert result.returncode == 0, result.output

    logs = boxed("logs", "1", "box", check=True).stdout
    assert "can't open '/etc/os-release'" in logs
    assert "in-container" in logs
    assert "on-the-host" not in logs
    assert "cwd=/workspace workspace=/workspace" in logs
    assert "host=absent home=/root" in logs  # the runner's environment stays outside
    assert "read: written by write in /workspace/out" in logs
    assert f"sha={sha} token=*** greeting=hello step=yes" in logs
    assert secret not in logs

    data = boxed("show", "1", "--json", check=True).json()
    artifacts = {a["path"]: a for a in data["artifacts"]}
    assert sorted(artifacts) == ["out/report.txt", "out/result.txt"]
    report = b"artifact from the container\n"
    assert artifacts["out/report.txt"]["digest"] == "sha256:" + hashlib.sha256(report).hexdigest()
    # Files the container made (as its root) are removed with the workspace.
    assert not (boxed.home / "workspaces" / "run-1" / "box").exists()


@pytest.mark.integration
def test_a_timed_out_step_leaves_no_container(repo: GitRepo, boxed: Conveyor) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              box:
                image: {IMAGE}
                shell: sh
                steps:
                  - name: slow
                    timeout: 2s
                    continue_on_error: true
                    run: echo slow started; sleep 300
                  - name: stubborn
                    timeout: 2s
                    run: trap '' TERM; echo stubborn started; sleep 300
            """
        },
    )
    started = time.monotonic()
    result = boxed("run", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.output
    assert elapsed < 30

    job = boxed("show", "1", "--json", check=True).json()["jobs"][0]
    steps = {s["name"]: s for s in job["steps"]}
    assert steps["slow"]["reason"] == "timed out after 2s"
    assert steps["stubborn"]["reason"] == "timed out after 2s"
    assert job["reason"] == "step stubborn timed out after 2s"
    logs = boxed("logs", "1", "box", check=True).stdout
    assert "slow started" in logs
    assert "stubborn started" in logs
    # SIGTERM reached the slow step through the client (sig-proxy) and --init: it stopped alone.
    assert "removed container conveyor-1-box-slow" not in logs
    assert steps["slow"]["finished_at"] < steps["stubborn"]["started_at"]
    # The stubborn step ignored SIGTERM, so its client was killed and the container removed.
    assert "[conveyor] removed container conveyor-1-box-stubborn-1-" in logs
    # `boxed` checks at teardown that `podman ps -a` has no conveyor-* container.


@pytest.mark.integration
def test_cancelling_a_run_stops_its_container_and_keeps_secrets_off_command_lines(
    repo: GitRepo, boxed: Conveyor, podman: Podman
) -> None:
    secret = "never-on-a-command-line-77"
    set_secret(boxed, "shop", "API_TOKEN", secret)
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              box:
                image: {IMAGE}
                shell: sh
                env:
                  TOKEN: ${{{{ secrets.API_TOKEN }}}}
                run: echo waiting; sleep 300
            """
        },
    )
    proc = boxed.popen("run")
    try:
        deadline = time.monotonic() + 60
        while not podman.containers() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        [name] = podman.containers()
        assert name.startswith("conveyor-1-box-box-1-")
        inside = podman("exec", name, "sh", "-c", 'echo "$TOKEN"').stdout.strip()
        assert inside == secret
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert secret.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                continue  # the process is gone
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert podman.containers() == []


@pytest.mark.integration
def test_a_bash_step_in_an_image_without_bash_says_what_to_do(
    repo: GitRepo, boxed: Conveyor
) -> None:
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              box:
                image: {IMAGE}
                run: echo hello
            """
        },
    )
    result = boxed("run", timeout=120)
    assert result.returncode == 1
    assert "the image has no bash: give the job or the step `shell: sh`" in result.stderr
    assert "command not found (exit 127)" in result.stderr


def test_without_an_engine_the_job_fails_clearly(repo: GitRepo, conveyor: Conveyor) -> None:
    conveyor.extra_env[ENGINE_VARIABLE] = "no-such-engine"
    repo.commit(
        "pipeline",
        {
            "conveyor.yml": f"""
            service: shop
            jobs:
              box:
                image: {IMAGE}
                shell: sh
                run: echo hello
            """
        },
    )
    result = conveyor("run")
    assert result.returncode == 1
    assert f"container engine 'no-such-engine' ({ENGINE_VARIABLE}) not found" in result.stderr


def test_the_job_environment_does_not_reach_the_podman_client(tmp_path: Path) -> None:
    # A job's PATH is for the container; the client still finds podman on the runner's PATH.
    host = {"PATH": os.environ["PATH"], "CONTAINERS_CONF": "/etc/x.conf"}
    client = client_env(host, {"PATH": "/nowhere", "CONTAINERS_CONF": "/job.conf", "A": "1"})
    assert client == {**host, "A": "1"}
