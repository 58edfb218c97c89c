"""GitLab: a project's deployments (the Deployments API), with the commits each brought.

Requests (GitLab REST API v4, ``PRIVATE-TOKEN: <token>``; lists paged by ``X-Next-Page``,
empty on the last page):

- ``GET /api/v4/projects/{id}/deployments?order_by=updated_at&sort=asc&updated_after=TIME``:
  ``id``, ``sha``, ``status`` (``success``, ``failed``, ``canceled``, ``skipped``, or still
  ``created``, ``running``, ``blocked``), ``created_at``, ``updated_at``,
  ``environment.name``, ``deployable.started_at`` and ``deployable.finished_at``.
- ``GET /api/v4/projects/{id}/repository/compare?from=A&to=B``: ``commits`` with
  ``committed_date`` and ``authored_date`` or, as GitLab's reference shows them, only
  ``created_at`` (the commit time); the first deployment of an environment brings only
  its own commit (``GET /api/v4/projects/{id}/repository/commits/{sha}``).

Incremental: the cursor holds the newest ``updated_at`` seen (GitLab updates a deployment when
it ends, so one still running comes back once it has) and the last successful commit of each
environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any
from urllib.parse import quote

from pydantic import Field

from conveyor.connectors.base import (
    Api,
    ConnectorOptions,
    Name,
    Pull,
    commit,
    connector,
    deployment_record,
    items,
    later,
    raw_commits,
    text,
    time_of,
    with_commits,
)

RESULTS = {"success": "succeeded", "failed": "failed"}
ENDED = {"success", "failed", "canceled", "skipped"}


class GitLabConnector(ConnectorOptions):
    """GitLab deployments (Deployments API) of one project."""

    project: Name = Field(description="the project's id or path (group/name)")
    service: Name = Field(description="the Conveyor service its deployments are of")
    api_url: str = Field("https://gitlab.com", description="the GitLab instance")


def api(options: GitLabConnector, token: str | None) -> Api:
    return Api(options.api_url, {"PRIVATE-TOKEN": token} if token else {})


def pull(api: Api, options: GitLabConnector, cursor: Mapping[str, Any]) -> Pull:
    found = Pull(cursor=dict(cursor))
    project = f"/api/v4/projects/{quote(options.project, safe='')}"
    params: dict[str, Any] = {"order_by": "updated_at", "sort": "asc", "per_page": 100}
    since = cursor.get("updated_after")
    if since:
        params["updated_after"] = since
    shas: dict[str, str] = dict(cursor.get("shas") or {})
    newest = since
    for page in api.next_page_header(f"{project}/deployments", params):
        for deployment in items(page, None, "GitLab deployments"):
            newest = later(newest, text(time_of(deployment.get("updated_at"), "updated_at")))
            status = str(deployment.get("status"))
            if status not in ENDED:
                continue  # comes back updated once it ends
            env = (deployment.get("environment") or {}).get("name")
            environment = found.environment(options, str(env or ""))
            result = RESULTS.get(status)
            if environment is None or result is None:
                if result is None:
                    found.skipped += 1  # canceled or skipped: nothing was deployed
                continue
            found.records.append(_record(api, project, options, deployment, environment, shas))
    found.cursor["updated_after"] = newest
    found.cursor["shas"] = shas
    return found


def _record(
    api: Api,
    project: str,
    options: GitLabConnector,
    deployment: dict[str, Any],
    environment: str,
    shas: dict[str, str],
) -> dict[str, Any]:
    what = f"GitLab deployment {deployment.get('id')}"
    job = deployment.get("deployable") or {}
    started = time_of(job.get("started_at") or deployment.get("created_at"), f"{what}: started")
    finished = time_of(job.get("finished_at") or deployment.get("updated_at"), f"{what}: finished")
    sha = str(deployment.get("sha") or "")
    result = RESULTS[str(deployment.get("status"))]
    id_ = f"deployment-{deployment.get('id')}"
    record = deployment_record(options.service, environment, id_, sha, started, finished, result)
    return with_commits(record, shas, partial(commits, api, project))


def commits(api: Api, project: str, previous: str | None, sha: str) -> list[dict[str, Any]]:
    listed = raw_commits(
        api,
        previous,
        sha,
        (f"{project}/repository/compare", {"from": previous, "to": sha}),
        f"{project}/repository/commits/{sha}",
        "GitLab",
    )
    # GitLab's reference shows the compare's commits with ``created_at`` (GitLab's name for the
    # commit time) and no ``committed_date`` or ``authored_date``: both shapes are read.
    return [
        commit(
            str(c.get("id")),
            text(time_of(c.get("committed_date") or c.get("created_at"), f"commit {c.get('id')}")),
            text(time_of(c["authored_date"], "authored_date")) if c.get("authored_date") else None,
        )
        for c in listed
    ]


EXTENSION = connector(
    "gitlab",
    GitLabConnector,
    api,
    pull,
    "GitLab deployments (Deployments API), with the commits each brought.",
    order=20,
)
