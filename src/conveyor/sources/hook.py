"""Installing the git hook that hands changes to the server, and delivering its spool.

`install` writes `hookscript.py` out as the hook with its configuration embedded: post-receive
in a bare repository; post-commit, post-merge and post-rewrite in a working repository
(commits, merges and rebases on the watched branches). A hook of the same name that Conveyor
did not write is left alone unless `force`, which moves it aside to `<name>.before-conveyor`
(and `uninstall` puts it back); the two are not chained.

The hook file holds the server's token, so it is readable by its owner only (and the group, in
a repository shared with `core.sharedRepository`).

`drain_spools` is the server's side of the spool: changes queued by hooks while the server was
down are recorded from the spool directories of the local repositories it builds, so they are
delivered when the server is back even if nobody pushes again.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.errors import ConveyorError, GitError
from conveyor.git import run_git_clean
from conveyor.sources import hookscript
from conveyor.sources.intake import record_change
from conveyor.sources.mirror import is_local
from conveyor.store.db import Store
from conveyor.store.models import Service

log = logging.getLogger("conveyor.hooks")

BARE_HOOKS = ("post-receive",)
WORKING_HOOKS = ("post-commit", "post-merge", "post-rewrite")
BACKUP_SUFFIX = ".before-conveyor"
SPOOL_NAME = "conveyor-spool"
CONFIG_LINE = "CONFIG: dict[str, object] = {}"
CONFIG_PREFIX = "CONFIG: dict[str, object] = "
# A shebang longer than this, or with blanks in it, is not run as written on every system.
SHEBANG_MAX = 120

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REF = re.compile(r"^refs/[^\x00-\x1f\x7f]+$")
_DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


@dataclass(frozen=True)
class GitRepository:
    """A repository as the hook sees it."""

    path: Path  # what the server knows it by: the bare repository, or the working tree's top
    git_dir: Path  # the common git directory (shared by all worktrees)
    hooks_dir: Path  # core.hooksPath if set
    bare: bool
    shared: bool  # core.sharedRepository: pushes run the hook as other users of the group

    @property
    def hook_names(self) -> tuple[str, ...]:
        return BARE_HOOKS if self.bare else WORKING_HOOKS

    @property
    def default_spool(self) -> Path:
        return self.git_dir / SPOOL_NAME


@dataclass
class Installed:
    repository: GitRepository
    hooks: list[Path]
    moved_aside: list[Path] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    spool: Path | None = None


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_git_clean("-C", str(repo), *args)


def locate(repo: Path) -> GitRepository:
    """The repository at (or containing) `repo`."""
    out = _git(repo, "rev-parse", "--is-bare-repository", "--git-common-dir", "--git-path", "hooks")
    if out.returncode != 0:
        raise GitError(
            f"{repo} is not a git repository",
            hint="give the path of a bare repository (for pushes) or of a working copy",
        )
    bare_flag, common, hooks = out.stdout.splitlines()[:3]
    bare = bare_flag == "true"
    git_dir = (repo / common).resolve()
    hooks_dir = (repo / hooks).resolve()
    if bare:
        path = git_dir
    else:
        top = _git(repo, "rev-parse", "--show-toplevel")
        path = Path(top.stdout.strip()).resolve() if top.returncode == 0 else git_dir.parent
    shared = _git(repo, "config", "--get", "core.sharedRepository").stdout.strip()
    return GitRepository(
        path=path,
        git_dir=git_dir,
        hooks_dir=hooks_dir,
        bare=bare,
        shared=shared not in ("", "false", "umask", "0"),
    )


def default_branches(repo: GitRepository) -> list[str]:
    """on.push.branches of the conveyor.yml at HEAD; empty (every branch) when there is none."""
    from conveyor.git import read_file_at
    from conveyor.sources.commits import PIPELINE_FILE
    from conveyor.spec import PipelineError, parse_pipeline

    try:
        raw = read_file_at(repo.path, "HEAD", PIPELINE_FILE)
    except ConveyorError:
        return []  # no commit yet
    if raw is None:
        return []
    try:
        pipeline = parse_pipeline(raw.decode("utf-8", "replace"), filename=PIPELINE_FILE)
    except PipelineError:
        return []
    push = pipeline.on.push if pipeline.on else None
    return list(push.branches) if push else []


def _check_server(server: str) -> None:
    scheme, sep, rest = server.partition("://")
    host = rest.split("/", 1)[0]
    if not sep or scheme not in ("http", "https") or not host or re.search(r"[\s@?#]", server):
        raise ConveyorError(
            f"{server!r} is not a server URL",
            hint="give it as http://HOST:PORT (or https://), e.g. http://127.0.0.1:8080",
        )
    port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host else ""
    if port and not port.isdigit():
        raise ConveyorError(f"{server!r} has an invalid port")


def _check_token(token: str) -> None:
    if not token or not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ConveyorError(
            "the token is missing or is not a token",
            hint="create one with `conveyor token create hooks --scope trigger`, then pass "
            "--token or set CONVEYOR_TOKEN",
        )


def _plain(value: object) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, str | int) and not isinstance(value, bool)


def embed(config: dict[str, Any]) -> str:
    """`config` as a Python literal: only strings, integers and lists of strings, written by
    repr() and read back with ast.literal_eval to be sure it is that data and nothing else."""
    if not all(isinstance(k, str) and _plain(v) for k, v in config.items()):
        raise ConveyorError("the hook configuration holds something other than plain data")
    literal = repr(dict(sorted(config.items())))
    if "\n" in literal or ast.literal_eval(literal) != config:
        raise ConveyorError("the hook configuration cannot be embedded")
    return literal


def render(config: dict[str, Any], python: str = sys.executable) -> str:
    """The hook: the template with `python` as interpreter and `config` embedded as data."""
    template = Path(hookscript.__file__).read_text(encoding="utf-8")
    if template.count(CONFIG_LINE) != 1 or not template.startswith("#!"):
        raise ConveyorError("the hook template is damaged; reinstall conveyor")
    body = template.split("\n", 1)[1].replace(CONFIG_LINE, CONFIG_PREFIX + embed(config), 1)
    shebang = f"#!{python} -IS"
    if "\\" in python:
        raise ConveyorError(f"cannot start the hook with {python!r}: a backslash in its path")
    if len(shebang) > SHEBANG_MAX or re.search(r"\s", python):
        # sh runs the first two lines and execs Python; for Python they are a string literal.
        quoted = "'" + python.replace("'", "'\"'\"'") + "'"
        shebang = f"#!/bin/sh\n''''exec {quoted} -IS \"$0\" \"$@\" # '''"
    return f"{shebang}\n{body}"


def read_config(path: Path) -> dict[str, Any] | None:
    """The configuration embedded in an installed hook; None if it is not Conveyor's."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if f"# {hookscript.MARKER}:" not in text:
        return None
    for line in text.splitlines():
        if line.startswith(CONFIG_PREFIX):
            try:
                value = ast.literal_eval(line.removeprefix(CONFIG_PREFIX))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
            return value if isinstance(value, dict) else None
    return None


def is_ours(path: Path) -> bool:
    """Written by `conveyor hook install` (any version): its marker line is there."""
    try:
        with path.open("rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    return f"\n# {hookscript.MARKER}:".encode() in head


def install(
    repo: Path,
    *,
    server: str,
    token: str | Callable[[GitRepository], str],
    branches: list[str] | None = None,
    spool: Path | None = None,
    force: bool = False,
    python: str = sys.executable,
) -> Installed:
    """Install the hooks; `branches` None means on.push.branches at HEAD, [] every branch.
    `token` may be a function making the hook's token for the repository: it is called once
    everything else has been checked, so that a refused install makes no token."""
    server = server.rstrip("/")
    _check_server(server)
    if isinstance(token, str):
        _check_token(token)
    where = locate(repo)
    watched = default_branches(where) if branches is None else branches
    spool_dir = (spool or where.default_spool).absolute()
    targets = [where.hooks_dir / name for name in where.hook_names]
    foreign = [t for t in targets if (t.exists() or t.is_symlink()) and not is_ours(t)]
    clash = [t for t in foreign if Path(f"{t}{BACKUP_SUFFIX}").exists()]
    if foreign and not force:
        names = ", ".join(str(t) for t in foreign)
        raise ConveyorError(
            f"{names}: a hook Conveyor did not write is already there; nothing was changed",
            hint=f"run again with --force to move it aside to <name>{BACKUP_SUFFIX} "
            "(`conveyor hook uninstall` puts it back), or call it from your hook yourself",
        )
    if clash:
        raise ConveyorError(
            f"{clash[0]}{BACKUP_SUFFIX} exists already; move one of the two away first"
        )
    if not isinstance(token, str):
        token = token(where)
        _check_token(token)
    mode = 0o750 if where.shared else 0o700
    where.hooks_dir.mkdir(parents=True, exist_ok=True)
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o770 if where.shared else 0o700)
    result = Installed(where, [], branches=list(watched), spool=spool_dir)
    for target in targets:
        if target in foreign:
            backup = Path(f"{target}{BACKUP_SUFFIX}")
            target.rename(backup)
            result.moved_aside.append(backup)
        config = {
            "hook": target.name,
            "server": server,
            "token": token,
            "repository": str(where.path),
            "spool": str(spool_dir),
            "branches": list(watched),
            "version": 1,
        }
        tmp = target.with_name(f".{target.name}.conveyor-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render(config, python))
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, target)
        result.hooks.append(target)
    return result


def uninstall(repo: Path) -> tuple[list[Path], list[Path]]:
    """Remove Conveyor's hooks and put back any moved aside: (removed, restored)."""
    where = locate(repo)
    removed, restored = [], []
    for name in (*BARE_HOOKS, *WORKING_HOOKS):
        target = where.hooks_dir / name
        if not is_ours(target):
            continue
        target.unlink()
        removed.append(target)
        backup = Path(f"{target}{BACKUP_SUFFIX}")
        if backup.exists():
            backup.rename(target)
            restored.append(target)
    return removed, restored


def installed_config(where: GitRepository) -> dict[str, Any] | None:
    for name in where.hook_names:
        config = read_config(where.hooks_dir / name)
        if config is not None:
            return config
    return None


@dataclass(frozen=True)
class Flushed:
    spool: Path
    delivered: int
    rejected: int
    left: int
    problem: str | None


def flush(
    repo: Path,
    *,
    server: str | None = None,
    token: str | None = None,
    spool: Path | None = None,
) -> Flushed:
    """Deliver the repository's spool now, with the installed hook's server and token unless
    given."""
    where = locate(repo)
    config = installed_config(where) or {}
    server = (server or config.get("server") or "").rstrip("/")
    token = token or config.get("token")
    spool_dir = spool or Path(config.get("spool") or where.default_spool)
    if not server:
        raise ConveyorError(
            f"no Conveyor hook is installed in {where.path} and no server was given",
            hint="pass --server (or set CONVEYOR_URL) and --token",
        )
    _check_server(server)
    _check_token(token or "")
    delivered, rejected, left, problem = hookscript.deliver_spool(
        {"server": server, "token": token, "spool": str(spool_dir)}
    )
    return Flushed(spool_dir, delivered, rejected, left, problem)


# --- the server's side ------------------------------------------------------------------------

# Spool files the server recorded but could not remove (another user's): not read again.
_undeletable: set[str] = set()
DRAIN_FILES = 500


def registered_services(session: Session, repository: str) -> list[Service]:
    """The services built from a repository on this machine, however the path is spelt."""
    wanted = {repository, str(Path(repository).resolve())}
    return list(session.scalars(select(Service).where(Service.repository.in_(wanted))))


def spool_dirs(repository: str) -> list[Path]:
    """Where hooks installed with the defaults spool changes for a local repository."""
    if not is_local(repository):
        return []
    root = Path(repository)
    return [root / SPOOL_NAME, root / ".git" / SPOOL_NAME]


def _spooled_change(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    ref, before, after = data.get("ref"), data.get("before"), data.get("after")
    delivery, pusher = data.get("delivery"), data.get("pusher")
    valid = (
        isinstance(ref, str)
        and len(ref) <= 1000
        and _REF.match(ref)
        and isinstance(before, str)
        and _SHA.match(before)
        and isinstance(after, str)
        and _SHA.match(after)
        and isinstance(delivery, str)
        and _DELIVERY.match(delivery)
        and (pusher is None or isinstance(pusher, str))
    )
    if not valid:
        return None
    return {"ref": ref, "before": before, "after": after, "delivery": delivery, "pusher": pusher}


def drain_spools(store: Store) -> int:
    """Record the changes hooks spooled for the local repositories of registered services, as
    if the hooks had delivered them (same source and delivery ids: a change already delivered
    is a duplicate). Returns how many were new."""
    with store.session() as session:
        rows = session.execute(select(Service.name, Service.repository)).all()
    by_dir: dict[Path, list[tuple[str, str]]] = {}
    for name, repository in rows:
        for directory in spool_dirs(repository):
            by_dir.setdefault(directory, []).append((name, repository))
    new = 0
    for directory, services in by_dir.items():
        try:
            names = sorted(
                n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith(".")
            )
        except OSError:
            continue  # no spool: the usual case
        for name in names[:DRAIN_FILES]:
            path = directory / name
            if str(path) in _undeletable:
                continue
            change = _spooled_change(path)
            if change is None:
                log.warning("spooled change %s is unreadable; left in place", path)
                _undeletable.add(str(path))
                continue
            with store.write() as w:
                for service, repository in services:
                    payload = {
                        "repository": repository,
                        "ref": change["ref"],
                        "before": change["before"],
                        "after": change["after"],
                        "pusher": change["pusher"],
                        # Whoever can write to the spool wrote this: a claim, like a hook
                        # token's.
                        "pusher_via": "claimed by a change the hook spooled",
                    }
                    new += record_change(
                        w,
                        source="git",
                        delivery_id=f"{service}:{change['delivery']}",
                        service=service,
                        payload=payload,
                    )
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("spooled change %s recorded but not removed: %s", path, exc)
                _undeletable.add(str(path))
    if new:
        log.info("recorded %d change(s) spooled by git hooks", new)
    return new
