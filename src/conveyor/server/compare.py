"""Two releases of a service side by side, for the compare page: the commits one brings over
the other (with their authors, read from git), and each one's run, artifacts and deployments
with their checks (as the release timeline tells them)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from conveyor.delivery.authorship import repository_of
from conveyor.errors import ConveyorError
from conveyor.git import CommitInfo, commits_between
from conveyor.server.auth import require
from conveyor.server.schemas.common import ERRORS, errors
from conveyor.server.schemas.compare import Comparison
from conveyor.server.tokens import Identity
from conveyor.store.db import Store
from conveyor.views.runs import load_release
from conveyor.views.timeline import release_timeline

router = APIRouter(responses=ERRORS)
Reader = Annotated[Identity, Depends(require("read"))]
# Commits listed each way: a page a person reads, not a history export.
LIMIT = 500


def _side(store: Store, release_id: int) -> dict[str, Any]:
    """One release as the compare page shows it, from its timeline."""
    timeline = release_timeline(store, release_id)
    entries = timeline["entries"]

    def first(kind: str) -> dict[str, Any]:
        return next(e for e in entries if e["kind"] == kind)

    return {
        "release": timeline["release"],
        "run": first("run"),
        "built": first("release"),
        # Rollbacks that put another release back belong to that one's side.
        "deployments": [
            e
            for e in entries
            if e["kind"] in ("deployment", "rollback") and e["release"] == release_id
        ],
    }


def _commit(c: CommitInfo) -> dict[str, Any]:
    return {
        "sha": c.sha,
        "subject": c.subject,
        "author": c.author_name,
        "author_email": c.author_email,
        "authored_at": c.authored_at,
        "committer": c.committer_name,
        "committed_at": c.committed_at,
    }


def compare(store: Store, base_id: int, head_id: int) -> dict[str, Any]:
    """What going from release ``base_id`` to ``head_id`` changes (see the module)."""
    with store.session() as session:
        base = load_release(session, base_id)
        head = load_release(session, head_id)
        if base.service_id != head.service_id:
            raise ConveyorError(
                f"release {base_id} is of {base.service.name} and release {head_id} of "
                f"{head.service.name}: only releases of one service compare",
                hint="`conveyor releases --service NAME` lists a service's releases",
            )
        service = head.service.name
        try:
            repo = repository_of(store, head)
            added = commits_between(repo, base.sha, head.sha, LIMIT)
            removed = commits_between(repo, head.sha, base.sha, LIMIT)
            problem = None
        except ConveyorError as exc:
            added, removed, problem = [], [], exc.message
    people = Counter((c.author_name, c.author_email) for c in added)
    return {
        "service": service,
        "base": _side(store, base_id),
        "head": _side(store, head_id),
        "commits": [_commit(c) for c in added],
        "removed": [_commit(c) for c in removed],
        "authors": [
            {"name": name, "email": email, "commits": n}
            for (name, email), n in people.most_common()
        ],
        "limit": LIMIT,
        "problem": problem,
    }


@router.get(
    "/releases/{base_id}/compare/{head_id}",
    tags=["releases"],
    response_model=Comparison,
    responses=errors(404),
)
def compare_releases(request: Request, base_id: int, head_id: int, _: Reader) -> dict[str, Any]:
    """Release ``head_id`` against ``base_id`` (of the same service): ``commits`` it brings
    (``git log base..head``) with their ``authors``, ``removed`` (what it takes away), and each
    side's run with its jobs, artifacts and deployments with their checks."""
    return compare(request.app.state.conveyor.store, base_id, head_id)
