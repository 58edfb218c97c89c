"""Commit ranges: the commits a deployment brought to its environment for the first time.

The range is every commit reachable from the deployed commit and not from the previous
successful deployment's commit (``git rev-list NEW ^OLD``), so merge commits bring the branch's
commits with them and a squash merge counts as the one commit it is. Lead time is measured per
commit of the range, never from pull-request metadata.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from conveyor.errors import GitError
from conveyor.facts import Change
from conveyor.git import run_git

# A first deployment may bring a repository's whole history; this many commits are recorded at
# most (the DORA engine's look-back then decides which count).
MAX_RANGE = 10_000
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def commit_range(
    repo: Path, sha: str, previous: str | None = None, *, limit: int = MAX_RANGE
) -> list[Change]:
    """Commits reachable from ``sha`` and not from ``previous`` (all of them when None),
    newest first, with committer and author dates."""
    for rev in (sha, previous):
        if rev is not None and not _SHA.match(rev):
            raise GitError(f"{rev!r} is not a commit id")
    args = ["rev-list", f"--max-count={limit}", "--format=%H %cI %aI", "--no-commit-header", sha]
    if previous is not None and previous != sha:
        args.append(f"^{previous}")
    elif previous == sha:
        return []
    result = run_git(repo, *args, "--", check=False)
    if result.returncode != 0:
        raise GitError(
            f"cannot list the commits of {sha[:12]} in {repo}: "
            + result.stderr.decode("utf-8", "replace").strip()
        )
    changes = []
    for line in result.stdout.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3:
            changes.append(
                Change(
                    sha=parts[0],
                    committed_at=dt.datetime.fromisoformat(parts[1]).astimezone(dt.UTC),
                    authored_at=dt.datetime.fromisoformat(parts[2]).astimezone(dt.UTC),
                )
            )
    return changes
