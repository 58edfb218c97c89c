"""What a person deciding an approval is shown beside it (issue 16): what the environment serves
now, the commits approving brings with their authors, how the release's checks and
verifications went in the environments it has been through, and the forge's compare link when
the repository is on a known forge.

The commits are the `Change` the no-self-approval rule reads (delivery.authorship, the range
DORA counts): the card shows exactly the range whose authors may not approve it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.engine.approvals import Change, ChangeOf
from conveyor.engine.promotion import pipeline_of, version_of
from conveyor.forges import links as forge_links
from conveyor.store.db import Store
from conveyor.store.models import Approval, Delivery, Deployment, EnvironmentState, Release

# Commits listed on a card; the count says how many more the range holds.
SHOWN_COMMITS = 50


def approval_context(session: Session, approval: Approval, change: Change) -> dict[str, Any]:
    """The context of ``approval`` (read in ``session``), ``change`` being what it lets through."""
    dep = approval.deployment
    release = dep.release
    serving_id = session.scalar(
        select(EnvironmentState.current_release_id).where(
            EnvironmentState.service_id == dep.service_id,
            EnvironmentState.name == dep.environment,
        )
    )
    serving = session.get(Release, serving_id) if serving_id else None
    authors: list[str] = []
    for commit in change.commits:
        if commit.author_name and commit.author_name not in authors:
            authors.append(commit.author_name)
    # The forge named by the deliveries that started the run (a hook is no forge).
    forge = session.scalar(
        select(Delivery.source).where(Delivery.run_id == release.run_id, Delivery.source != "hook")
    )
    links = forge_links(dep.service.repository, forge, release.sha, change.base)
    return {
        "serving": (
            {"release": serving.id, "version": version_of(serving), "sha": serving.sha}
            if serving is not None
            else None
        ),
        "base": change.base,
        "commits": [
            {
                "sha": c.sha,
                "subject": c.subject,
                "author": c.author_name,
                "author_email": c.author_email,
            }
            for c in change.commits[:SHOWN_COMMITS]
        ],
        "commit_count": len(change.commits),
        "authors": authors,
        "problem": change.problem,
        "checks": checks_on_the_way(session, approval),
        "compare_url": (links or {}).get("compare"),
        "commit_url": (links or {}).get("commit"),
    }


def add_contexts(store: Store, rows: Sequence[dict[str, Any]], change: ChangeOf) -> None:
    """Give each pending approval of ``rows`` (views.delivery.list_approvals) its ``context``;
    a decided one's range is gone (it is what serves now), so it gets none."""
    with store.session() as session:
        for row in rows:
            if row["status"] != "pending":
                continue
            approval = session.get(Approval, row["id"])
            if approval is not None:
                row["context"] = approval_context(session, approval, change(approval))


def checks_on_the_way(session: Session, approval: Approval) -> list[dict[str, Any]]:
    """The release's latest deployment in each environment it has been deployed to (staging
    before production...), in the pipeline's order, with each check's outcome. The approval's
    own deployment only once it has checks (an inconclusive one), since before that it has none."""
    dep = approval.deployment
    latest: dict[str, Deployment] = {}
    for other in session.scalars(
        select(Deployment)
        .where(Deployment.release_id == dep.release_id, Deployment.kind == "deploy")
        .order_by(Deployment.id)
    ):
        if other.id != dep.id or other.checks:
            latest[other.environment] = other
    order = list(pipeline_of(dep.release.run).environments)
    ranked = sorted(
        latest.values(),
        key=lambda d: (order.index(d.environment) if d.environment in order else len(order), d.id),
    )
    return [
        {
            "environment": d.environment,
            "deployment": d.id,
            "status": d.status,
            "checks": [
                {"kind": c.get("kind"), "outcome": c.get("outcome"), "detail": c.get("detail")}
                for c in d.checks
                if isinstance(c, dict)
            ],
        }
        for d in ranked
    ]
