"""Run a job's steps in a container: `image:` on a job, through podman or docker.

Each step is one `<engine> run --rm` of the job's image, with the job's workspace mounted at
/workspace, so files a step writes are there for the next step and for artifact collection on the
host. The step's command is the same shell command as on the host (`bash ... -c script` or
`sh -e -c script`), run by the image: an image without bash (busybox, alpine) needs `shell: sh`
(a bash step there fails with exit 127 and a line saying so).

Only the step's own variables go into the container: CI, CONVEYOR and CONVEYOR_*, and the names
the job and step declare in `env`. The runner's PATH, HOME and the rest of its environment
describe the host and stay out. Values are handed to the engine client through its environment
(`-e NAME` without a value), never on its command line, so secrets do not show in `ps`. The one
exception is a variable the client itself reads (PATH, HOME, DOCKER_HOST, CONTAINERS_CONF, ...):
the client keeps the runner's value and the job's value is given as `-e NAME=value`, so such
variables must not hold secrets.

Stopping: the executor signals the process group of the `run` client, which forwards the signal
into the container (sig-proxy) where `--init` passes it on to the step. A step that ignores it
gets the client killed, and the container would keep running without it: after every step the
executor calls `remove_container`, which force-removes whatever is left under the step's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from conveyor.errors import ConveyorError

__all__ = [
    "ENGINE_VARIABLE",
    "WORKSPACE",
    "client_env",
    "client_host_env",
    "container_argv",
    "container_engine",
    "container_name",
    "remove_container",
    "step_variables",
]

ENGINE_VARIABLE = "CONVEYOR_CONTAINER_ENGINE"
WORKSPACE = "/workspace"
REMOVE_TIMEOUT = 30.0

# Variables the engine client reads itself: it must see the runner's values of these.
_CLIENT_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "CONTAINER_HOST",
        "CONTAINER_CONNECTION",
        "REGISTRY_AUTH_FILE",
    }
)
_CLIENT_PREFIXES = ("CONTAINERS_", "DOCKER_", "PODMAN_", "BUILDAH_")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# A reference like registry:5000/team/app:1.2@sha256:..., and in particular not an option.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
# Runs a bash step only when the image has bash, else says so (instead of the runtime's "exec
# failed: No such file or directory"); `exec` leaves bash exactly as it would have been.
_BASH_CHECK = (
    "command -v bash >/dev/null 2>&1 || { echo '[conveyor] the image has no bash:"
    ' give the job or the step `shell: sh`\' >&2; exit 127; }; exec "$@"'
)


def _client_reads(name: str) -> bool:
    return name in _CLIENT_NAMES or name.startswith(_CLIENT_PREFIXES)


def _is_podman(engine: str) -> bool:
    return Path(engine).name.startswith("podman")


def container_engine(env: Mapping[str, str], chosen: str | None = None) -> str:
    """The container engine command: ``chosen`` (CONVEYOR_CONTAINER_ENGINE) if set, else
    podman, else docker.

    ``env`` is the runner's environment (its PATH is searched). Raises ConveyorError when the
    chosen engine, or both podman and docker, cannot be found.
    """
    path = env.get("PATH")
    chosen = (chosen or "").strip()
    if chosen:
        if shutil.which(chosen, path=path) is None:
            raise ConveyorError(
                f"container engine '{chosen}' ({ENGINE_VARIABLE}) not found",
                hint=f"install it, or set {ENGINE_VARIABLE} to podman or docker",
            )
        return chosen
    for engine in ("podman", "docker"):
        if shutil.which(engine, path=path) is not None:
            return engine
    raise ConveyorError(
        "the job has an image but neither podman nor docker is installed on this runner",
        hint=f"install podman or docker, or set {ENGINE_VARIABLE} to the engine's command",
    )


def container_name(run_id: int, job: str, step: str, attempt: int) -> str:
    """A name for one attempt of one step: ``conveyor-<run>-<job>-<step>-<attempt>-<random>``.

    Job and step are reduced to the characters engines accept. The random suffix keeps names
    unique across runners sharing one engine (each runner's run ids start at 1), so that removing
    a container by name never touches another runner's.
    """

    def safe(text: str) -> str:
        return _NAME_UNSAFE.sub("-", text).strip("-._")[:40].rstrip("-._") or "x"

    return f"conveyor-{run_id}-{safe(job)}-{safe(step)}-{attempt}-{secrets.token_hex(4)}"


def step_variables(env: Mapping[str, str], declared: Iterable[str]) -> dict[str, str]:
    """The part of a step's environment that belongs inside its container.

    ``env`` is the step's full environment (the runner's inherited variables plus the step's
    own); ``declared`` are the names the job and step set in `env`.
    """
    names = set(declared)
    return {
        k: v
        for k, v in env.items()
        if k in names or k in ("CI", "CONVEYOR") or k.startswith("CONVEYOR_")
    }


def client_host_env(runner_env: Mapping[str, str]) -> dict[str, str]:
    """What of the runner's own environment the engine client gets: the variables it reads
    itself (PATH, HOME, CONTAINER_HOST...) and the locale, not the runner's settings, tokens or
    virtualenv."""
    return {
        k: v
        for k, v in runner_env.items()
        if (_client_reads(k) or k in ("LANG", "LC_ALL", "TZ")) and not k.startswith("CONVEYOR_")
    }


def client_env(host_env: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """The environment of the engine client: the runner's, plus the values `-e NAME` forwards.

    A variable the client reads itself keeps the runner's value (``container_argv`` passes the
    step's value on the command line instead).
    """
    return {
        **host_env,
        **{k: v for k, v in variables.items() if not _client_reads(k)},
    }


def _check_image(image: str) -> None:
    if not _IMAGE.fullmatch(image):
        raise ConveyorError(
            f"invalid image reference '{image}'",
            hint="give a name like registry.example.com/team/app:1.2",
        )


def _target_dir(workdir: str) -> str:
    target = posixpath.normpath(posixpath.join(WORKSPACE, workdir.replace("\\", "/")))
    if target != WORKSPACE and not target.startswith(WORKSPACE + "/"):
        raise ConveyorError(f"working directory '{workdir}' is outside the workspace")
    return target


def container_argv(
    engine: str,
    image: str,
    step_argv: Sequence[str],
    *,
    workspace: Path,
    env: Mapping[str, str],
    workdir: str,
    name: str,
) -> list[str]:
    """The command that runs ``step_argv`` in ``image`` with ``workspace`` at /workspace.

    ``env`` are the variables for the container (see ``step_variables``); their values must be in
    the client's environment (see ``client_env``), as only their names are on this command line.
    CONVEYOR_WORKSPACE is /workspace inside. ``workdir`` is relative to the workspace.
    """
    _check_image(image)
    source = str(workspace.resolve())
    if ":" in source or "," in source:
        raise ConveyorError(f"cannot mount the workspace {source}: its path has ':' or ','")
    argv = [
        engine,
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--init",
        "-v",
        f"{source}:{WORKSPACE}:Z",
        "-w",
        _target_dir(workdir),
    ]
    for key in sorted(env):
        if key == "CONVEYOR_WORKSPACE":
            argv += ["-e", f"{key}={WORKSPACE}"]
        elif _client_reads(key):
            argv += ["-e", f"{key}={env[key]}"]
        else:
            argv += ["-e", key]
    if step_argv and step_argv[0] == "bash":
        step_argv = ["sh", "-c", _BASH_CHECK, "sh", *step_argv]
    return [*argv, image, *step_argv]


async def remove_container(
    engine: str,
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = REMOVE_TIMEOUT,
) -> bool:
    """Force-remove the container ``name`` if it still exists; True when one was removed.

    Never raises for a missing container or engine: this is cleanup after the step.
    """
    argv = [engine, "rm", "--force"]
    if _is_podman(engine):
        argv += ["--time", "0", "--ignore"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            name,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if not isinstance(exc, TimeoutError):
            raise
        await proc.wait()
        return False
    return proc.returncode == 0 and bool(out.strip())
