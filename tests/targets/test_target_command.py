"""The `command` target running real bash commands: what they are told through CONVEYOR_*
variables, where they run, and how their failures read."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conveyor.targets.base import Instance, ReleaseBundle, TargetContext, TargetError
from conveyor.targets.command import CommandTarget

T = TypeVar("T")
IMAGES = (
    "registry.example.com/web@sha256:" + "a" * 64,
    "registry.example.com/worker@sha256:" + "b" * 64,
)
# Writes every CONVEYOR_* variable and the folder it ran in, into that folder (the release's:
# the only one a sandboxed command may write).
RECORD = 'env | grep -E "^(CONVEYOR_|DB_PASSWORD=)" | sort > "$NAME.record"; pwd >> "$NAME.record"'


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def make_bundle(tmp_path: Path, release_id: int, images: tuple[str, ...] = IMAGES) -> ReleaseBundle:
    root = tmp_path / "bundles" / str(release_id)
    root.mkdir(parents=True)
    sha = f"{release_id:07d}" + "c" * 33
    return ReleaseBundle(release_id=release_id, service="web", sha=sha, root=root, images=images)


class Env:
    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.lines: list[str] = []
        self.ctx = TargetContext(
            service="web",
            environment="production",
            tier="production",
            options=options,
            env={
                "NAME": "deploy",
                "CONVEYOR_ENVIRONMENT": "production",
                "DB_PASSWORD": "hunter2",
            },
            state_dir=tmp_path / "state",
            log=self.lines.append,
        )
        self.target = CommandTarget(self.ctx)

    def recorded(self, name: str, bundle: ReleaseBundle) -> tuple[dict[str, str], str]:
        *pairs, cwd = (bundle.root / f"{name}.record").read_text().splitlines()
        return dict(p.split("=", 1) for p in pairs), cwd


def test_deploy_gets_the_release_in_variables_and_runs_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's own settings must not reach the user's command.
    monkeypatch.setenv("CONVEYOR_TOKEN", "server-admin-token")
    env = Env(tmp_path, deploy=f"{RECORD}; echo deployed $CONVEYOR_RELEASE", url="http://web.test")
    one, two = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)

    first = run(env.target.deploy(one, None))
    second = run(env.target.deploy(two, first))

    variables, cwd = env.recorded("deploy", two)
    assert variables == {
        "CONVEYOR_DEPLOY_URL": "http://web.test",
        "CONVEYOR_ENVIRONMENT": "production",
        "CONVEYOR_IMAGE": IMAGES[0],
        "CONVEYOR_IMAGES": " ".join(IMAGES),
        "CONVEYOR_PREVIOUS_RELEASE": one.version,
        "CONVEYOR_RELEASE": two.version,
        "CONVEYOR_RELEASE_DIR": str(two.root),
        "CONVEYOR_RELEASE_ID": "2",
        "CONVEYOR_SHA": two.sha,
        "DB_PASSWORD": "hunter2",
    }
    assert cwd == str(two.root)
    assert "CONVEYOR_PREVIOUS_RELEASE" not in env.recorded("deploy", one)[0]
    assert f"deployed {two.version}" in env.lines
    assert second.release_id == 2
    assert second.url == env.target.endpoint(second) == "http://web.test"
    assert second.state["version"] == two.version
    assert second.state["previous"] == one.version


def test_failing_deploy_reports_status_and_the_last_output_lines(tmp_path: Path) -> None:
    script = (
        'for n in $(seq 1 40); do echo "step $n"; done; echo "helm: release failed" >&2; exit 3'
    )
    env = Env(tmp_path, deploy=script)

    with pytest.raises(TargetError) as failure:
        run(env.target.deploy(make_bundle(tmp_path, 1), None))

    message = str(failure.value)
    assert message.startswith("deploy command exited with status 3 after "), message
    assert "helm: release failed" in message
    assert "step 40" in message
    assert "step 1\n" not in message, "only the tail of the output is quoted"
    assert len(env.lines) == 42  # the command line, then every output line


def test_a_command_over_its_timeout_is_stopped(tmp_path: Path) -> None:
    env = Env(tmp_path, deploy="echo waiting; sleep 30", timeout=0.5)
    with pytest.raises(
        TargetError, match=r"(?s)^deploy command timed out after 0.5 s; last output:.*waiting"
    ):
        run(env.target.deploy(make_bundle(tmp_path, 1), None))


def test_rollback_command_gets_the_older_release_variables(tmp_path: Path) -> None:
    env = Env(tmp_path, deploy="true", rollback=RECORD.replace("$NAME", "rollback"))
    one, two = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    first = run(env.target.deploy(one, None))
    second = run(env.target.deploy(two, first))

    back = run(env.target.rollback(second, one, first))

    variables, cwd = env.recorded("rollback", one)
    assert variables["CONVEYOR_RELEASE"] == one.version
    assert variables["CONVEYOR_RELEASE_ID"] == "1"
    assert variables["CONVEYOR_SHA"] == one.sha
    assert variables["CONVEYOR_PREVIOUS_RELEASE"] == two.version
    assert cwd == str(one.root)
    assert back.release_id == 1
    assert back.state["version"] == one.version


def test_without_a_rollback_command_deploy_runs_again_for_the_older_release(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, deploy=RECORD)
    one, two = make_bundle(tmp_path, 1, ()), make_bundle(tmp_path, 2)
    first = run(env.target.deploy(one, None))
    second = run(env.target.deploy(two, first))
    (one.root / "deploy.record").unlink()

    run(env.target.rollback(second, one, first))

    variables, cwd = env.recorded("deploy", one)
    assert variables["CONVEYOR_RELEASE"] == one.version
    assert variables["CONVEYOR_IMAGES"] == variables["CONVEYOR_IMAGE"] == ""
    assert cwd == str(one.root)


def test_failing_rollback_is_a_target_error(tmp_path: Path) -> None:
    env = Env(tmp_path, deploy="true", rollback="echo nope; exit 9")
    with pytest.raises(TargetError, match=r"(?s)^rollback command exited with status 9.*nope"):
        run(env.target.rollback(None, make_bundle(tmp_path, 1), None))


def test_status_exit_code_decides_running(tmp_path: Path) -> None:
    env = Env(tmp_path, deploy="true", status='echo "checking $CONVEYOR_RELEASE"; test -e up')
    bundle = make_bundle(tmp_path, 1)
    instance = run(env.target.deploy(bundle, None))

    down = run(env.target.status(instance))
    assert not down.running
    assert down.detail == f"status command exited with status 1: checking {bundle.version}"

    (bundle.root / "up").touch()
    up = run(env.target.status(instance))
    assert up.running
    assert up.detail == f"checking {bundle.version}"
    # Adopting after a server restart asks the same question.
    assert run(env.target.adopt(instance))


def test_without_status_command_the_instance_counts_as_running(tmp_path: Path) -> None:
    env = Env(tmp_path, deploy="true")
    assert run(env.target.status(Instance(release_id=4))).running


def test_deploy_option_is_required(tmp_path: Path) -> None:
    env = Env(tmp_path)
    with pytest.raises(TargetError, match="option deploy is required"):
        run(env.target.deploy(make_bundle(tmp_path, 1), None))
