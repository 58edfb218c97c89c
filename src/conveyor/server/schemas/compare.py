"""Two releases side by side: GET /releases/{base}/compare/{head} (server/compare.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field

from conveyor.server.schemas.common import Schema
from conveyor.server.schemas.timeline import (
    DeploymentEntry,
    ReleaseEntry,
    RollbackEntry,
    RunEntry,
    TimelineRelease,
)

__all__ = ["CompareAuthor", "CompareCommit", "CompareSide", "Comparison"]


class CompareCommit(Schema):
    sha: str
    subject: str
    author: str
    author_email: str
    authored_at: dt.datetime
    committer: str
    committed_at: dt.datetime


class CompareAuthor(Schema):
    name: str
    email: str
    commits: int = Field(description="How many of the compared commits they wrote.")


class CompareSide(Schema):
    release: TimelineRelease
    run: RunEntry = Field(description="The run that built and tested it, with its jobs.")
    built: ReleaseEntry = Field(description="Its artifacts and publication.")
    deployments: list[Annotated[DeploymentEntry | RollbackEntry, Field(discriminator="kind")]] = (
        Field(description="Its deployments with their checks, oldest first.")
    )


class Comparison(Schema):
    service: str
    base: CompareSide
    head: CompareSide
    commits: list[CompareCommit] = Field(
        description="In head and not in base (git log base..head), newest first."
    )
    removed: list[CompareCommit] = Field(
        description="In base and not in head: what going from base to head takes away (a "
        "rollback to an older release)."
    )
    authors: list[CompareAuthor] = Field(description="Who wrote `commits`, most commits first.")
    limit: int = Field(description="At most this many commits are listed each way.")
    problem: str | None = Field(
        description="Why git could not list the commits (the lists are then empty)."
    )
