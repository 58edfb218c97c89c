"""Git plumbing against real repositories made in tmp_path."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.errors import GitError
from conveyor.git import (
    CommitInfo,
    current_branch,
    export_commit,
    find_repo_root,
    read_file_at,
    resolve_commit,
)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_AUTHOR_DATE": "2024-03-01T10:00:00+02:00",
    "GIT_COMMITTER_NAME": "Carl Committer",
    "GIT_COMMITTER_EMAIL": "carl@example.com",
    "GIT_COMMITTER_DATE": "2024-03-01T11:30:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",  # no user config: the test controls everything
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, message: str = "first") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if files is not None:
        commit_files(path, files, message)
    return path


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "hello\n", "src/app.py": "print(1)\n"})


# --- find_repo_root -------------------------------------------------------------------------


def test_find_repo_root_from_a_subdirectory_and_a_file(repo: Path) -> None:
    assert find_repo_root(repo / "src") == repo.resolve()
    assert find_repo_root(repo / "src" / "app.py") == repo.resolve()
    assert find_repo_root(repo) == repo.resolve()


def test_find_repo_root_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match="is not inside a git repository") as info:
        find_repo_root(plain)
    assert info.value.hint == "run `git init` and commit, or pass --repo"


def test_find_repo_root_of_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="does not exist"):
        find_repo_root(tmp_path / "missing")


def test_find_repo_root_of_a_bare_repository(tmp_path: Path, repo: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    assert find_repo_root(bare) == bare.resolve()
    assert resolve_commit(bare, "main").sha == git(repo, "rev-parse", "HEAD")


def test_git_dir_from_a_hook_environment_does_not_redirect_us(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo(tmp_path / "other", {"x": "1"})
    expected = git(repo, "rev-parse", "HEAD")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert resolve_commit(repo).sha == expected
    export_commit(repo, "HEAD", tmp_path / "ws")
    assert (tmp_path / "ws" / "README.md").exists()


# --- resolve_commit -------------------------------------------------------------------------


def test_resolve_commit_reads_every_field(repo: Path) -> None:
    parent = git(repo, "rev-parse", "HEAD")
    message = "Add feature: ünïcode subject\n\nLonger body explaining why.\nSecond line."
    commit_files(repo, {"feature.txt": "x"}, message)

    info = resolve_commit(repo)
    assert isinstance(info, CommitInfo)
    assert info.sha == git(repo, "rev-parse", "HEAD")
    assert len(info.sha) == 40
    assert info.sha.startswith(info.short_sha)
    assert len(info.short_sha) >= 7
    assert info.subject == "Add feature: ünïcode subject"
    assert info.message == message
    assert (info.author_name, info.author_email) == ("Ada Author", "ada@example.com")
    assert (info.committer_name, info.committer_email) == ("Carl Committer", "carl@example.com")
    assert info.authored_at.utcoffset() == timedelta(hours=2)
    assert info.authored_at.isoformat() == "2024-03-01T10:00:00+02:00"
    assert info.committed_at.isoformat() == "2024-03-01T11:30:00+00:00"
    assert info.parents == (parent,)


def test_resolve_commit_by_branch_tag_and_short_sha(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "release v1")
    commit_files(repo, {"b": "2"}, "second")
    assert resolve_commit(repo, "v1").sha == first  # annotated tag peeled to its commit
    assert resolve_commit(repo, first[:10]).sha == first
    assert resolve_commit(repo, "main~1").sha == first
    assert resolve_commit(repo, "main").parents == (first,)


def test_root_commit_has_no_parents_and_merge_has_two(repo: Path) -> None:
    assert resolve_commit(repo).parents == ()
    git(repo, "checkout", "-q", "-b", "side")
    side = commit_files(repo, {"side.txt": "s"}, "side")
    git(repo, "checkout", "-q", "main")
    main = commit_files(repo, {"main.txt": "m"}, "main work")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    assert resolve_commit(repo).parents == (main, side)


def test_unknown_revision_names_rev_and_repo(repo: Path) -> None:
    with pytest.raises(GitError, match=r"unknown revision 'no-such-branch' in .*repo") as info:
        resolve_commit(repo, "no-such-branch")
    assert info.value.hint is not None


@pytest.mark.parametrize("rev", ["--upload-pack=touch /tmp/pwned", "-1", "--all", "", "a\nb"])
def test_option_like_or_malformed_revisions_are_refused(repo: Path, rev: str) -> None:
    with pytest.raises(GitError, match="invalid revision"):
        resolve_commit(repo, rev)
    with pytest.raises(GitError, match="invalid revision"):
        export_commit(repo, rev, repo.parent / "out")
    with pytest.raises(GitError, match="invalid revision"):
        read_file_at(repo, rev, "README.md")


def test_repository_without_commits(tmp_path: Path) -> None:
    empty = make_repo(tmp_path / "empty")
    with pytest.raises(GitError, match="has no commits yet"):
        resolve_commit(empty)


def test_resolve_commit_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not a git repository"):
        resolve_commit(tmp_path)


def test_tree_object_is_not_a_commit(repo: Path) -> None:
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    with pytest.raises(GitError):
        export_commit(repo, tree, repo.parent / "out")


# --- current_branch and read_file_at --------------------------------------------------------


def test_current_branch_and_detached_head(repo: Path) -> None:
    assert current_branch(repo) == "main"
    git(repo, "checkout", "-q", "-b", "feature/x")
    assert current_branch(repo) == "feature/x"
    git(repo, "checkout", "-q", "--detach")
    assert current_branch(repo) is None


def test_current_branch_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not a git repository"):
        current_branch(tmp_path)


def test_read_file_at_reads_the_committed_content_not_the_working_tree(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    commit_files(repo, {"README.md": "changed\n"}, "change")
    (repo / "README.md").write_text("uncommitted\n")
    assert read_file_at(repo, first, "README.md") == b"hello\n"
    assert read_file_at(repo, "HEAD", "README.md") == b"changed\n"
    assert read_file_at(repo, first, "src/app.py") == b"print(1)\n"


def test_read_file_at_missing_file_or_directory_is_none(repo: Path) -> None:
    assert read_file_at(repo, "HEAD", "conveyor.yml") is None
    assert read_file_at(repo, "HEAD", "src") is None


def test_read_file_at_unknown_commit_is_an_error(repo: Path) -> None:
    with pytest.raises(GitError, match="unknown revision"):
        read_file_at(repo, "0" * 40, "README.md")


def test_read_file_at_refuses_paths_outside_the_repository(repo: Path) -> None:
    with pytest.raises(GitError, match="inside the repository"):
        read_file_at(repo, "HEAD", "../etc/passwd")
    with pytest.raises(GitError, match="inside the repository"):
        read_file_at(repo, "HEAD", "/etc/passwd")


# --- export_commit --------------------------------------------------------------------------


def test_export_writes_the_commit_tree_only(tmp_path: Path, repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("uncommitted edit\n")
    (repo / "untracked.txt").write_text("not in git\n")
    git(repo, "add", "untracked.txt")  # staged but not committed: still not part of the commit
    (repo / "src" / "new.py").write_text("x")

    dest = tmp_path / "ws" / "job"
    export_commit(repo, sha, dest)

    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["README.md", "src/app.py"]
    assert (dest / "README.md").read_text() == "hello\n"
    assert not (dest / ".git").exists()


def test_export_of_an_older_commit(tmp_path: Path, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    commit_files(repo, {"README.md": "v2\n", "added.txt": "a"}, "second")
    git(repo, "rm", "-q", "src/app.py")
    git(repo, "commit", "-q", "-m", "remove app")
    export_commit(repo, first, tmp_path / "old")
    assert (tmp_path / "old" / "README.md").read_text() == "hello\n"
    assert (tmp_path / "old" / "src" / "app.py").exists()
    assert not (tmp_path / "old" / "added.txt").exists()


def test_export_keeps_executable_bits_and_symlinks(tmp_path: Path, repo: Path) -> None:
    script = repo / "build.sh"
    script.write_text("#!/bin/sh\necho built\n")
    script.chmod(0o755)
    (repo / "link-to-readme").symlink_to("README.md")
    (repo / "tools").mkdir()
    (repo / "tools" / "python").symlink_to("/usr/bin/python3")  # outside: still a valid link
    (repo / "tools" / "up").symlink_to("../src")
    sha = commit_files(repo, {}, "script and links")

    dest = tmp_path / "ws"
    export_commit(repo, sha, dest)

    assert os.access(dest / "build.sh", os.X_OK)
    assert not os.access(dest / "README.md", os.X_OK)
    assert stat.S_IMODE((dest / "README.md").stat().st_mode) & 0o022 == 0
    assert (dest / "link-to-readme").is_symlink()
    assert os.readlink(dest / "link-to-readme") == "README.md"
    assert (dest / "link-to-readme").read_text() == "hello\n"
    assert os.readlink(dest / "tools" / "python") == "/usr/bin/python3"
    assert os.readlink(dest / "tools" / "up") == "../src"
    assert subprocess.run(["./build.sh"], cwd=dest, capture_output=True, check=True).stdout == (
        b"built\n"
    )


def test_export_of_an_empty_tree_creates_dest(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {})
    dest = tmp_path / "deep" / "ws"
    export_commit(repo, "HEAD", dest)
    assert dest.is_dir()
    assert list(dest.iterdir()) == []


def test_export_refuses_a_non_empty_destination(tmp_path: Path, repo: Path) -> None:
    dest = tmp_path / "ws"
    dest.mkdir()
    (dest / "stale.txt").write_text("left from an earlier run")
    with pytest.raises(GitError, match="not empty"):
        export_commit(repo, "HEAD", dest)


def test_export_of_an_unknown_commit(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(GitError, match="unknown revision"):
        export_commit(repo, "f" * 40, tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_export_of_a_20_file_repository_is_fast(tmp_path: Path) -> None:
    files = {f"pkg/mod_{i:02d}.py": f"VALUE = {i}\n" * 50 for i in range(19)}
    repo = make_repo(tmp_path / "r", {**files, "README.md": "x\n"})
    started = time.perf_counter()
    export_commit(repo, "HEAD", tmp_path / "ws")
    elapsed = time.perf_counter() - started
    assert len(list((tmp_path / "ws").rglob("*.py"))) == 19
    assert elapsed < 2.0, f"export took {elapsed:.3f}s"


def test_export_ignores_export_ignore_and_export_subst(tmp_path: Path) -> None:
    """Those attributes shape release tarballs; a CI workspace is a checkout and needs tests/."""
    repo = make_repo(
        tmp_path / "r",
        {
            ".gitattributes": (
                "tests export-ignore\nversion.txt export-subst\ndocs/** export-ignore\n"
            ),
            "version.txt": "version $Format:%H$\n",
            "tests/test_app.py": "def test_app(): pass\n",
            "tests/unit/.gitattributes": "* export-ignore\n",
            "tests/unit/test_unit.py": "def test_unit(): pass\n",
            "docs/index.md": "# docs\n",
            "src/app.py": "print(1)\n",
        },
    )
    dest = tmp_path / "ws"
    export_commit(repo, "HEAD", dest)

    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        ".gitattributes",
        "docs/index.md",
        "src/app.py",
        "tests/test_app.py",
        "tests/unit/.gitattributes",
        "tests/unit/test_unit.py",
        "version.txt",
    ]
    assert (dest / "version.txt").read_text() == "version $Format:%H$\n"


def test_export_runs_no_filter_driver_or_hook_from_the_users_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "r", {".gitattributes": "*.txt filter=evil\n", "a.txt": "raw\n"})
    marker = tmp_path / "ran"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hook = hooks / "post-index-change"
    hook.write_text(f"#!/bin/sh\necho hook >> '{marker}'\n")
    hook.chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(
        f"[filter \"evil\"]\n\tsmudge = echo filter >> '{marker}'; cat\n\trequired = true\n"
        f"[core]\n\thooksPath = {hooks}\n\tattributesFile = {tmp_path / 'attributes'}\n"
    )
    (tmp_path / "attributes").write_text("* filter=evil\n")
    git(repo, "config", "filter.evil.smudge", f"echo repo-filter >> '{marker}'; cat")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))

    export_commit(repo, "HEAD", tmp_path / "ws")

    assert (tmp_path / "ws" / "a.txt").read_text() == "raw\n"
    assert not marker.exists(), marker.read_text()


def test_export_applies_line_endings_from_the_commit_not_the_working_tree(
    tmp_path: Path,
) -> None:
    repo = make_repo(
        tmp_path / "r",
        {
            ".gitattributes": "*.bat text eol=crlf\n",
            "run.bat": "echo 1\necho 2\n",
            "sub/b.txt": "b\n",
        },
    )
    # Uncommitted attributes, also in a directory where the commit has none, change nothing.
    (repo / ".gitattributes").write_text("* -text\n")
    (repo / "sub" / ".gitattributes").write_text("* text eol=crlf\n")

    dest = tmp_path / "ws"
    export_commit(repo, "HEAD", dest)
    assert (dest / "run.bat").read_bytes() == b"echo 1\r\necho 2\r\n"  # as git checkout writes it
    assert (dest / "sub" / "b.txt").read_bytes() == b"b\n"
    assert not (dest / "sub" / ".gitattributes").exists()


def test_export_from_a_linked_worktree_and_a_subdirectory(tmp_path: Path, repo: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "other", str(linked))
    sha = commit_files(linked, {"only-on-other.txt": "o\n"}, "other work")
    export_commit(linked / "src", sha, tmp_path / "ws")
    assert (tmp_path / "ws" / "only-on-other.txt").read_text() == "o\n"
    assert (tmp_path / "ws" / "src" / "app.py").exists()


def test_export_from_a_shallow_clone(tmp_path: Path, repo: Path) -> None:
    commit_files(repo, {"second.txt": "2\n"}, "second")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    export_commit(clone, "HEAD", tmp_path / "ws")
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["README.md", "second.txt", "src"]


def test_export_from_a_repository_with_an_awkward_path(tmp_path: Path) -> None:
    odd = make_repo(tmp_path / 'we:ird "repo"\nwith\\ newline', {"a.txt": "a\n"})
    linked = tmp_path / "linked: too"
    git(odd, "worktree", "add", "-q", "-b", "side", str(linked))
    export_commit(odd, "HEAD", tmp_path / "ws")
    export_commit(linked, "HEAD", tmp_path / "ws2")
    assert (tmp_path / "ws" / "a.txt").read_text() == "a\n"
    assert (tmp_path / "ws2" / "a.txt").read_text() == "a\n"


def test_export_from_a_bare_repository(tmp_path: Path, repo: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    export_commit(bare, "main", tmp_path / "ws")
    assert (tmp_path / "ws" / "src" / "app.py").read_text() == "print(1)\n"


def test_export_from_a_clone_that_borrows_objects(tmp_path: Path, repo: Path) -> None:
    clone = tmp_path / "shared"
    git(tmp_path, "clone", "-q", "--shared", str(repo), str(clone))
    assert (clone / ".git" / "objects" / "info" / "alternates").exists()
    export_commit(clone, "HEAD", tmp_path / "ws")
    assert (tmp_path / "ws" / "README.md").read_text() == "hello\n"


def test_export_leaves_the_repository_untouched(tmp_path: Path, repo: Path) -> None:
    def snapshot() -> dict[str, bytes]:
        return {
            p.relative_to(repo).as_posix(): p.read_bytes()
            for p in sorted(repo.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    export_commit(repo, "HEAD", tmp_path / "ws")
    assert snapshot() == before


def test_export_of_a_submodule_is_an_empty_directory(tmp_path: Path, repo: Path) -> None:
    sub_sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sub_sha},vendor/lib")
    git(repo, "commit", "-q", "-m", "add submodule")
    export_commit(repo, "HEAD", tmp_path / "ws")
    assert (tmp_path / "ws" / "vendor" / "lib").is_dir()
    assert list((tmp_path / "ws" / "vendor" / "lib").iterdir()) == []


def test_export_from_a_sha256_repository(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.mkdir()
    try:
        git(path, "init", "-q", "--object-format=sha256")
    except subprocess.CalledProcessError:
        pytest.skip("this git cannot create sha256 repositories")
    sha = commit_files(path, {"a.txt": "a\n"}, "first")
    assert len(sha) == 64
    export_commit(path, sha, tmp_path / "ws")
    assert (tmp_path / "ws" / "a.txt").read_text() == "a\n"


def test_export_refuses_a_tree_that_writes_into_dot_git(tmp_path: Path, repo: Path) -> None:
    blob = git(repo, "hash-object", "-w", "--stdin", "--path=x")
    inner = subprocess.run(
        ["git", "-C", str(repo), "mktree"],
        input=f"100644 blob {blob}\tconfig\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "-C", str(repo), "mktree"],
        input=f"040000 tree {inner}\t.git\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit = git(repo, "commit-tree", "-m", "evil", tree)
    with pytest.raises(GitError, match=r"could not export .*invalid path '\.git/config'"):
        export_commit(repo, commit, tmp_path / "ws")
    assert not (tmp_path / "ws" / ".git").exists()
