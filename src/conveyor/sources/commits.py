"""A commit becomes a queued run: read the pipeline file from the commit itself (never the
working tree), validate it, and record the run with its plan.

The engine and the store are imported by ``queue_commit`` alone: `conveyor run` against a server
reads the commit's pipeline file here and starts without them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError
from conveyor.git import CommitInfo, current_branch, read_file_at, resolve_commit
from conveyor.spec import Pipeline, parse_pipeline

if TYPE_CHECKING:
    from conveyor.plan import JobPlan
    from conveyor.store.db import Store, Writer

PIPELINE_FILE = "conveyor.yml"


@dataclass(frozen=True)
class QueuedRun:
    run_id: int
    commit: CommitInfo
    ref: str | None
    pipeline: Pipeline
    jobs: list[JobPlan]


def full_ref(repo: Path, rev: str) -> str | None:
    """refs/heads/main for `main` or for HEAD on main; None for a bare sha or detached HEAD."""
    if rev == "HEAD":
        branch = current_branch(repo)
        return f"refs/heads/{branch}" if branch else None
    out = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "rev-parse",
            "--verify",
            "--quiet",
            "--symbolic-full-name",
            "--end-of-options",
            rev,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    name = out.stdout.strip()
    return name if out.returncode == 0 and name.startswith("refs/") else None


def load_pipeline_at(repo: Path, commit: CommitInfo) -> Pipeline:
    raw = read_file_at(repo, commit.sha, PIPELINE_FILE)
    if raw is None:
        raise ConveyorError(
            f"commit {commit.short_sha} has no {PIPELINE_FILE}",
            hint="run `conveyor init`, commit the file, then run again",
        )
    return parse_pipeline(
        raw.decode("utf-8", errors="replace"), filename=f"{PIPELINE_FILE}@{commit.short_sha}"
    )


def queue_commit(
    store: Store,
    repo: Path,
    rev: str = "HEAD",
    *,
    trigger: str = "manual",
    ref: str | None = None,
    owner: str | None = None,
    service: str | None = None,
    read: tuple[CommitInfo, Pipeline] | None = None,
    pusher: str | None = None,
    pusher_via: str | None = None,
    guard: Callable[[Writer], None] | None = None,
) -> QueuedRun:
    """Queue a run of `rev`; with `service`, refuse a commit whose file names another one.
    `read` passes a commit and pipeline already read from `repo`, to skip reading them again."""
    from conveyor.engine.planner import plan_jobs
    from conveyor.engine.runs import create_run

    commit, pipeline = read or (None, None)
    if commit is None or pipeline is None:
        commit = resolve_commit(repo, rev)
        pipeline = load_pipeline_at(repo, commit)
    if service is not None and pipeline.service != service:
        raise ConveyorError(
            f"conveyor.yml at {commit.short_sha} is for service {pipeline.service}, not {service}"
        )
    jobs = plan_jobs(pipeline)
    ref = ref or full_ref(repo, rev)
    group, supersede = pipeline.concurrency_group()
    run_id = create_run(
        store,
        service=pipeline.service,
        repository=str(repo),
        sha=commit.sha,
        ref=ref,
        trigger=trigger,
        commit={
            "sha": commit.sha,
            "subject": commit.subject,
            "message": commit.message,
            "author_name": commit.author_name,
            "author_email": commit.author_email,
            "authored_at": commit.authored_at.isoformat(),
            "committer_name": commit.committer_name,
            "committer_email": commit.committer_email,
            "committed_at": commit.committed_at.isoformat(),
            "parents": list(commit.parents),
            # Who pushed it (hook or forge), so that they cannot approve its deployment.
            "pusher": pusher,
            # How the pusher is known: a token's user, a token's claim, a forge's payload.
            "pusher_via": pusher_via,
            # Where this run reads the commit from: the repository, or the server's mirror.
            "source": str(repo),
        },
        pipeline=pipeline.model_dump(mode="json", by_alias=True, exclude_none=True),
        jobs=jobs,
        owner=owner,
        concurrency_group=group,
        supersede=supersede,
        guard=guard,
    )
    return QueuedRun(run_id, commit, ref, pipeline, jobs)
