"""Who is behind the commits an approval would let through, read from git and the runs.

The range is the one DORA counts for a deployment (``git rev-list RELEASE ^BASE``), with BASE
what the environment serves now, for an approval to deploy, or served before the deployment
began, for accepting inconclusive checks. Never the last release that was cancelled, rejected
or failed: a commit that never reached the environment is still part of what approving brings
to it. Each commit comes with its author's and committer's names and e-mails, and with the
pushers recorded for runs of it.

A range git cannot list is reported as a problem, not as an empty range: nobody may decide an
approval whose authors cannot be told (engine.approvals).
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import object_session

from conveyor.engine.approvals import Change, Commit
from conveyor.errors import ConveyorError, GitError
from conveyor.git import run_git
from conveyor.metrics.ranges import MAX_RANGE
from conveyor.sources.mirror import source_for
from conveyor.store.db import Store
from conveyor.store.models import Approval, EnvironmentState, Release, Run

# Unit and record separators: git prints them between fields and commits, no name holds them.
_FORMAT = "%H%x1f%an%x1f%ae%x1f%cn%x1f%ce%x1e"
# Runs looked up per query (SQLite binds at most 32766 parameters).
_CHUNK = 500


@functools.lru_cache(maxsize=128)
def _commits(repo: str, sha: str, base: str | None) -> tuple[Commit, ...]:
    """The range's commits with their people; a range never changes, so it is read once."""
    args = ["rev-list", f"--max-count={MAX_RANGE}", f"--format={_FORMAT}", "--no-commit-header"]
    args += [sha, f"^{base}"] if base is not None else [sha]
    result = run_git(Path(repo), *args, "--", check=False)
    if result.returncode != 0:
        raise GitError(
            f"git cannot list the commits from {base[:7] if base else 'the start'} to {sha[:7]}: "
            + result.stderr.decode("utf-8", "replace").strip().removeprefix("fatal: ")
        )
    found = []
    for record in result.stdout.decode("utf-8", "replace").split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == 5:
            sha, author_name, author_email, committer_name, committer_email = fields
            found.append(Commit(sha, author_name, author_email, committer_name, committer_email))
    return tuple(found)


def repository_of(store: Store, release: Release) -> Path:
    """Where git can read ``release``'s commits: the folder its run was made from, else the
    service's mirror (as it is: never fetched here)."""
    service = release.service
    source = str(release.run.commit.get("source") or service.repository)
    if Path(source).is_dir():
        return Path(source)
    return source_for(store.home, service.name, service.repository, fetch=False)


class ChangeReader:
    """``reader(approval)``: the Change ``approval`` would let through. The approval must be
    attached to a session (its deployment, release and environment are read through it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, approval: Approval) -> Change:
        session = object_session(approval)
        assert session is not None, "the approval must be read in a session"
        dep = approval.deployment
        release = dep.release
        if approval.kind == "approval":
            base_id = session.scalar(
                select(EnvironmentState.current_release_id).where(
                    EnvironmentState.service_id == dep.service_id,
                    EnvironmentState.name == dep.environment,
                )
            )
        else:
            base_id = dep.previous_release_id
        base = session.scalar(select(Release.sha).where(Release.id == base_id)) if base_id else None
        try:
            commits = _commits(str(repository_of(self.store, release)), release.sha, base)
        except ConveyorError as exc:
            return Change(base=base, problem=exc.message)
        pushers: dict[str, set[str]] = {}
        shas = [c.sha for c in commits]
        for start in range(0, len(shas), _CHUNK):
            for sha, commit in session.execute(
                select(Run.sha, Run.commit).where(
                    Run.service_id == dep.service_id, Run.sha.in_(shas[start : start + _CHUNK])
                )
            ):
                if isinstance(commit.get("pusher"), str) and commit["pusher"]:
                    pushers.setdefault(sha, set()).add(commit["pusher"])
        return Change(
            commits=tuple(
                Commit(
                    c.sha,
                    c.author_name,
                    c.author_email,
                    c.committer_name,
                    c.committer_email,
                    tuple(sorted(pushers.get(c.sha, ()))),
                )
                for c in commits
            ),
            base=base,
        )
