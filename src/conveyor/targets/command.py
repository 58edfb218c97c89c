"""The ``command`` target: deploy with the user's own tool (helm, kubectl, ansible, a script).

Conveyor cannot know every platform, but it can decide which release goes where, run checks,
record and roll back. This target hands the "how" to a command from the user's repository and
tells it the "what" through ``CONVEYOR_*`` variables, so one deploy script serves every
release, and a rollback is the same script given an older release (unless the user has a
dedicated ``rollback`` command, e.g. ``helm rollback``).

Commands run like job steps: ``bash -eo pipefail -c`` in the release folder, sandboxed
(conveyor.sandbox) with that folder as the only writable one, and an environment made of the
environment's variables and secrets alone: nothing of the server's (its home, kubeconfig,
tokens). What a tool needs to reach its platform is given to it as a secret of the environment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from conveyor.errors import ConveyorError
from conveyor.extensions import Options
from conveyor.proc import run_process
from conveyor.targets.base import (
    Instance,
    ReleaseBundle,
    Target,
    TargetError,
    TargetStatus,
    common_url,
    read_options,
    target,
)
from conveyor.targets.fields import Command, Seconds

__all__ = ["EXTENSION", "CommandOptions", "CommandTarget"]

TAIL_LINES = 15


class CommandOptions(Options):
    """Deploys with your own commands (helm, kubectl, ansible, a script), told which release
    through CONVEYOR_* variables; rolling back is the same command given an older release."""

    deploy: Command = Field(
        description="Command that deploys the release, run in its folder with "
        "CONVEYOR_RELEASE, CONVEYOR_SHA, CONVEYOR_RELEASE_DIR, CONVEYOR_IMAGE(S) and "
        "CONVEYOR_PREVIOUS_RELEASE set.",
        examples=["./deploy.sh"],
    )
    rollback: Command | None = Field(
        None,
        description="Command that puts an earlier release back (e.g. `helm rollback`). "
        "Default: `deploy`, given the earlier release.",
    )
    status: Command | None = Field(
        None,
        description="Command that tells whether the release runs (exit status 0: running; "
        "its last line is shown). Default: a release counts as running.",
    )
    timeout: Seconds = Field(600.0, description="Seconds each command may take.")


class CommandTarget(Target):
    """Options: `CommandOptions`, and ``url`` (the environment's address, given to the
    commands as ``CONVEYOR_DEPLOY_URL``)."""

    name = "command"

    async def deploy(self, bundle: ReleaseBundle, previous: Instance | None) -> Instance:
        opts = self._options()
        earlier = _version_of(previous)
        await self._run(opts, "deploy", opts.deploy, self._env(bundle, earlier), bundle.root)
        return self._instance(bundle, earlier)

    async def rollback(
        self, failed: Instance | None, to: ReleaseBundle, kept: Instance | None
    ) -> Instance:
        """Without a ``rollback`` command the deploy command puts the older release back: it is
        given that release's variables and folder, exactly as when it first deployed it."""
        opts = self._options()
        command, what = opts.rollback, "rollback"
        if command is None:
            command, what = opts.deploy, "deploy (for the rollback)"
        undone = _version_of(failed)
        await self._run(opts, what, command, self._env(to, undone), to.root)
        return self._instance(to, undone)

    async def status(self, instance: Instance) -> TargetStatus:
        opts = self._options()
        command = opts.status
        version = instance.state.get("version")
        if command is None:
            return TargetStatus(True, f"{version or instance.release_id}: no status command")
        env = self._base_env()
        env.update(_state_variables(instance))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            cwd = self._status_dir(instance)
            result = await run_process(
                _argv(command),
                cwd=cwd,
                env=env,
                on_line=lambda line: _keep(tail, self.ctx.log, "status", line),
                timeout=opts.timeout,
                sandbox=self.ctx.confinement(),
            )
        except ConveyorError as exc:
            return TargetStatus(False, f"status command could not run: {exc.message}")
        if result.timed_out:
            return TargetStatus(False, f"status command timed out after {opts.timeout:g} s")
        detail = tail[-1] if tail else ""
        if result.ok:
            return TargetStatus(True, detail or f"{version or instance.release_id} is running")
        return TargetStatus(
            False, f"status command exited with status {result.exit_code}" + _suffix(detail)
        )

    def endpoint(self, instance: Instance) -> str | None:
        return common_url(self.ctx.options)

    # --- helpers -------------------------------------------------------------------------------

    def _options(self) -> CommandOptions:
        return read_options(CommandOptions, self.ctx.options, target=self.name)

    def _base_env(self) -> dict[str, str]:
        # The environment's variables only: the sandbox adds PATH, HOME and LANG.
        return dict(self.ctx.env)

    def _env(self, bundle: ReleaseBundle, previous: str | None) -> dict[str, str]:
        env = self._base_env()
        env.update(
            {
                **bundle.variables(),
                "CONVEYOR_RELEASE_DIR": str(bundle.root),
                "CONVEYOR_IMAGES": " ".join(bundle.images),
                "CONVEYOR_IMAGE": bundle.images[0] if bundle.images else "",
            }
        )
        if previous is not None and previous != bundle.version:
            env["CONVEYOR_PREVIOUS_RELEASE"] = previous
        else:
            env.pop("CONVEYOR_PREVIOUS_RELEASE", None)
        url = common_url(self.ctx.options)
        if url is not None:
            env["CONVEYOR_DEPLOY_URL"] = url
        return env

    def _instance(self, bundle: ReleaseBundle, previous: str | None) -> Instance:
        return Instance(
            release_id=bundle.release_id,
            url=common_url(self.ctx.options),
            state={
                "version": bundle.version,
                "sha": bundle.sha,
                "images": list(bundle.images),
                "root": str(bundle.root),
                "previous": previous,
            },
        )

    def _status_dir(self, instance: Instance) -> Path:
        """The release folder if it is still there; it is often a temporary copy, so a folder
        of the environment's own is the fallback (not the environment's state folder itself,
        which holds the target's records)."""
        root = instance.state.get("root")
        if isinstance(root, str) and Path(root).is_dir():
            return Path(root)
        fallback = self.ctx.state_dir / "status"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback

    async def _run(
        self, opts: CommandOptions, what: str, command: str, env: dict[str, str], cwd: Path
    ) -> None:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        timeout = opts.timeout
        self.ctx.log(f"[conveyor] {what}: {command}")
        try:
            result = await run_process(
                _argv(command),
                cwd=cwd,
                env=env,
                on_line=lambda line: _keep(tail, self.ctx.log, None, line),
                timeout=timeout,
                sandbox=self.ctx.confinement(),
            )
        except ConveyorError as exc:
            raise TargetError(f"{what} command could not run: {exc.message}") from exc
        if result.ok:
            return
        if result.timed_out:
            problem = f"{what} command timed out after {timeout:g} s"
        elif result.exit_code is not None and result.exit_code < 0:
            problem = f"{what} command was killed by signal {-result.exit_code}"
            problem += f" after {result.duration:.1f} s"
        else:
            problem = f"{what} command exited with status {result.exit_code}"
            problem += f" after {result.duration:.1f} s"
        if tail:
            problem += "; last output:\n    " + "\n    ".join(tail)
        raise TargetError(problem)


def _argv(command: str) -> list[str]:
    # As a job step runs: a failing line stops the script, and so does a failing pipe stage.
    return ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command]


def _keep(tail: deque[str], log: Callable[[str], None], prefix: str | None, line: str) -> None:
    tail.append(line)
    log(f"{prefix}: {line}" if prefix else line)


def _suffix(detail: str) -> str:
    return f": {detail}" if detail else ""


def _version_of(instance: Instance | None) -> str | None:
    if instance is None:
        return None
    version = instance.state.get("version")
    return version if isinstance(version, str) else None


def _state_variables(instance: Instance) -> dict[str, str]:
    state = instance.state
    env = {"CONVEYOR_RELEASE_ID": str(instance.release_id)}
    if isinstance(state.get("version"), str):
        env["CONVEYOR_RELEASE"] = state["version"]
    if isinstance(state.get("sha"), str):
        env["CONVEYOR_SHA"] = state["sha"]
    images = state.get("images")
    if isinstance(images, list) and all(isinstance(i, str) for i in images):
        env["CONVEYOR_IMAGES"] = " ".join(images)
        env["CONVEYOR_IMAGE"] = images[0] if images else ""
    if instance.url:
        env["CONVEYOR_DEPLOY_URL"] = instance.url
    return env


EXTENSION = target(
    "command",
    CommandOptions,
    CommandTarget,
    "Deploys with your own commands (helm, kubectl, ansible, a script), told which "
    "release through CONVEYOR_* variables; a rollback is the same command given an older "
    "release, unless `rollback` is set.",
    order=40,
)
