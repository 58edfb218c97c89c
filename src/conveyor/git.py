"""Read commits from a git repository and materialise a commit's tree as a job workspace.

Everything goes through the ``git`` command with argument lists, never a shell, and revisions
that look like options are refused, so a branch or sha taken from a webhook cannot smuggle in
``--upload-pack=...``. Jobs run on the tree of the commit, never on the user's working tree:
uncommitted and untracked files must not change what a run tests or ships.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from conveyor.errors import GitError

__all__ = [
    "CommitInfo",
    "commits_between",
    "current_branch",
    "export_commit",
    "find_repo_root",
    "read_file_at",
    "resolve_commit",
    "run_git",
    "run_git_clean",
]

# Variables git hooks set that would point our commands at another repository or index than
# the one we name with -C.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_LOG_FORMAT = "%x00".join(["%H", "%h", "%s", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%P", "%B"])
_NOT_A_REPO_HINT = "run `git init` and commit, or pass --repo"


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    short_sha: str
    message: str
    subject: str
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    parents: tuple[str, ...]


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"  # stable English messages in errors we pass on
    return env


def run_git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    argv = ["git", "-C", str(repo), "-c", "i18n.logOutputEncoding=UTF-8", *args]
    try:
        result = subprocess.run(argv, capture_output=True, env=_git_env(), check=False)
    except FileNotFoundError as exc:
        raise GitError(
            "git is not installed", hint="install git and make sure it is on PATH"
        ) from exc
    if check and result.returncode != 0:
        raise GitError(f"git {args[0]} failed in {repo}: {_stderr(result)}")
    return result


def run_git_clean(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """git as if started outside any repository: none of the caller's ``GIT_*`` variables (a
    hook runs with its own), never a password prompt, text output; the caller reads the result
    (``TimeoutExpired`` after ``timeout`` seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return subprocess.run(
        ["git", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    text = result.stderr.decode("utf-8", "replace").strip()
    return text.removeprefix("fatal: ") or f"exit status {result.returncode}"


def _check_rev(rev: str) -> None:
    if not rev or rev.startswith("-") or any(c in rev for c in "\0\n\r"):
        raise GitError(
            f"invalid revision {rev!r}",
            hint="give a branch, tag or commit sha; revisions may not start with '-'",
        )


def is_repository(repo: Path) -> bool:
    """Whether ``repo`` is a git repository (a working tree, inside one, or a bare one)."""
    return run_git(repo, "rev-parse", "--git-dir", check=False).returncode == 0


def find_repo_root(path: Path) -> Path:
    """The top of the working tree containing ``path`` (or the git directory of a bare repo)."""
    if not path.exists():
        raise GitError(f"{path} does not exist")
    start = path if path.is_dir() else path.parent
    result = run_git(start, "rev-parse", "--show-toplevel", check=False)
    if result.returncode == 0:
        return Path(os.fsdecode(result.stdout.rstrip(b"\n")))
    bare = run_git(start, "rev-parse", "--is-bare-repository", "--absolute-git-dir", check=False)
    lines = os.fsdecode(bare.stdout).split("\n")
    if bare.returncode == 0 and lines[0] == "true":
        return Path(lines[1])
    raise GitError(f"{path} is not inside a git repository", hint=_NOT_A_REPO_HINT)


def _explain_missing(repo: Path, rev: str) -> GitError:
    """Why ``rev`` could not be read: no repository, no commits at all, or an unknown name."""
    if not is_repository(repo):
        return GitError(f"{repo} is not a git repository", hint=_NOT_A_REPO_HINT)
    has_refs = run_git(repo, "for-each-ref", "--count=1", check=False).stdout.strip()
    head = run_git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    if not has_refs and head.returncode != 0:
        return GitError(f"the repository {repo} has no commits yet", hint="commit something first")
    return GitError(
        f"unknown revision '{rev}' in {repo}",
        hint="check the branch, tag or sha; fetch it first if it only exists on a remote",
    )


def resolve_commit(repo: Path, rev: str = "HEAD") -> CommitInfo:
    """Everything about one commit, in a single ``git log`` call."""
    _check_rev(rev)
    result = run_git(
        repo,
        "log",
        "-1",
        "--no-color",
        "--no-show-signature",
        f"--format={_LOG_FORMAT}",
        "--end-of-options",
        rev,
        "--",
        check=False,
    )
    if result.returncode != 0:
        raise _explain_missing(repo, rev)
    commit = _parse_commit(result.stdout.decode("utf-8", "replace"))
    if commit is None:
        raise GitError(f"'{rev}' in {repo} is not a commit")
    return commit


def _parse_commit(text: str) -> CommitInfo | None:
    """One commit as _LOG_FORMAT prints it; None if it is not one."""
    fields = text.split("\0", 10)
    if len(fields) != 11:
        return None
    sha, short, subject, an, ae, ad, cn, ce, cd, parents, body = fields
    return CommitInfo(
        sha=sha,
        short_sha=short,
        message=body.rstrip("\n"),
        subject=subject,
        author_name=an,
        author_email=ae,
        authored_at=datetime.fromisoformat(ad),
        committer_name=cn,
        committer_email=ce,
        committed_at=datetime.fromisoformat(cd),
        parents=tuple(parents.split()),
    )


def commits_between(repo: Path, base: str, head: str, limit: int) -> list[CommitInfo]:
    """The commits reachable from ``head`` and not from ``base`` (``git log base..head``),
    newest first, at most ``limit``."""
    for rev in (base, head):
        _check_rev(rev)
    result = run_git(
        repo,
        "log",
        f"--max-count={limit}",
        "--no-color",
        "--no-show-signature",
        # A record separator after each commit: a message may hold any other character.
        f"--format={_LOG_FORMAT}%x1e",
        "--end-of-options",
        head,
        f"^{base}",
        "--",
        check=False,
    )
    if result.returncode != 0:
        raise GitError(
            f"git cannot list the commits from {base[:7]} to {head[:7]} in {repo}: "
            + _stderr(result)
        )
    records = result.stdout.decode("utf-8", "replace").split("\x1e")
    return [c for c in (_parse_commit(r.lstrip("\n")) for r in records) if c is not None]


def current_branch(repo: Path) -> str | None:
    """The checked-out branch, or None when HEAD is detached."""
    result = run_git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if result.returncode == 0:
        return result.stdout.decode("utf-8", "replace").strip()
    if not is_repository(repo):
        raise GitError(f"{repo} is not a git repository", hint=_NOT_A_REPO_HINT)
    return None


def _commit_sha(repo: Path, rev: str) -> str:
    _check_rev(rev)
    result = run_git(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{rev}^{{commit}}",
        check=False,
    )
    if result.returncode != 0:
        raise _explain_missing(repo, rev)
    return result.stdout.decode().strip()


def read_file_at(repo: Path, sha: str, relpath: str | PurePosixPath) -> bytes | None:
    """The content of ``relpath`` in commit ``sha``; None when no such file is in that commit.

    A directory or a submodule at that path also gives None: neither has file content.
    """
    path = PurePosixPath(relpath)
    if path.is_absolute() or ".." in path.parts:
        raise GitError(f"'{relpath}' must be a path inside the repository")
    commit = _commit_sha(repo, sha)
    name = "" if str(path) == "." else str(path)
    result = run_git(repo, "cat-file", "blob", f"{commit}:{name}", check=False)
    return result.stdout if result.returncode == 0 else None


def _commit_and_objects(repo: Path, rev: str) -> tuple[str, Path]:
    """The full sha of commit ``rev`` and the absolute path of the object store holding it."""
    _check_rev(rev)
    # One git call for both: --git-common-dir (relative to -C, as every worktree shares the
    # objects of the main repository) is printed before --verify prints the commit.
    result = run_git(
        repo,
        "rev-parse",
        "--git-common-dir",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{rev}^{{commit}}",
        check=False,
    )
    common, _, commit = os.fsdecode(result.stdout).removesuffix("\n").rpartition("\n")
    if result.returncode != 0 or not common or not commit:
        raise _explain_missing(repo, rev)
    return commit, Path(os.path.abspath(repo / common / "objects"))


def _scratch_git_dir(path: Path, commit: str) -> None:
    """Make the empty directory ``path`` an empty repository for checking out ``commit``.

    export_commit lends it the user's objects through GIT_ALTERNATE_OBJECT_DIRECTORIES, which
    git only reads from. Checking out through it instead of the user's repository means nothing
    of that repository besides its objects takes part: not its config (filter drivers, hooks,
    fsmonitor), not its index, not the working-tree .gitattributes of directories the commit
    has none in.
    """
    for name in ("objects", "refs", "info"):
        (path / name).mkdir()
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    if len(commit) == 64:  # sha256; without a config file git assumes sha1
        (path / "config").write_text(
            "[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha256\n"
        )
    # info/attributes outranks every .gitattributes in the tree and the user's global attributes
    # file. Unsetting `filter` means no filter driver (git-lfs or any smudge command configured
    # in the user's global config) runs; text/eol/ident/working-tree-encoding still apply, as
    # in a checkout. export-ignore/export-subst are `git archive` attributes: a checkout, which
    # is what runs here, never applies them.
    (path / "info" / "attributes").write_text("* -filter\n")


def _quote_alternate(objects: Path) -> str:
    """``objects`` as one entry of GIT_ALTERNATE_OBJECT_DIRECTORIES, even if it holds a ':'."""
    text = str(objects).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


# Settings from the user's global config that would make a checkout run commands of theirs.
_EXPORT_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",  # post-index-change hook
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.sparseCheckout=false",
)


def export_commit(repo: Path, sha: str, dest: Path) -> None:
    """Write the tree of commit ``sha`` into ``dest`` (created; must be empty if it exists).

    The result is what ``git checkout`` of that commit would write: executable bits, symlinks
    (also ones pointing outside the tree), line endings from the commit's .gitattributes, and
    an empty directory for each submodule. Unlike ``git archive``, ``export-ignore`` and
    ``export-subst`` do not apply, so a repository that keeps ``tests export-ignore`` for its
    release tarballs still gets its tests in the workspace. No filter driver runs: files that
    git-lfs manages stay pointer files. Files are written with umask 022.
    """
    commit, objects = _commit_and_objects(repo, sha)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GitError(f"cannot export {commit[:12]} into {dest}: it exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conveyor-export-") as scratch:
        _scratch_git_dir(Path(scratch), commit)
        env = _git_env()
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = _quote_alternate(objects)
        # read-tree -u is the checkout machinery without checkout's hooks and ref updates: it
        # fills the scratch index from the tree and writes each entry into the work tree. git
        # itself refuses entries named .git or .., and any path through a symlink.
        argv = [
            "git",
            f"--git-dir={scratch}",
            f"--work-tree={os.path.abspath(dest)}",
            *_EXPORT_CONFIG,
            "read-tree",
            "-u",
            "--reset",
            "--no-recurse-submodules",
            commit,
        ]
        try:
            result = subprocess.run(argv, capture_output=True, env=env, check=False, umask=0o022)
        except FileNotFoundError as exc:
            raise GitError(
                "git is not installed", hint="install git and make sure it is on PATH"
            ) from exc
    if result.returncode != 0:
        raise GitError(f"could not export {commit[:12]} from {repo}: {_stderr(result)}")
