"""GitHub: deployments (the Deployments API and their statuses) and, for teams that deploy
from a workflow without creating deployments, the runs of that GitHub Actions workflow; the
commits each one brought come from the compare API.

Requests (GitHub REST API, ``Authorization: Bearer <token>``, ``X-GitHub-Api-Version:
2022-11-28``; lists are paged by the ``Link`` header, newest first):

- ``GET /repos/{owner}/{repo}/deployments?per_page=100``: ``id``, ``sha``, ``environment``,
  ``created_at``; ``GET /repos/{owner}/{repo}/deployments/{id}/statuses``: ``state``
  (``success``, ``failure``, ``error``, ``inactive``, or still ``queued``, ``pending``,
  ``in_progress``) and ``created_at``, newest first.
- ``GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs?created=>=TIME``:
  ``workflow_runs`` with ``id``, ``head_sha``, ``status``, ``conclusion``,
  ``run_started_at``, ``updated_at``, ``created_at``.
- ``GET /repos/{owner}/{repo}/compare/{base}...{head}?per_page=100``: ``commits`` (oldest
  first, paged by the ``Link`` header), each with ``commit.committer.date`` and
  ``commit.author.date``; the first deployment of an environment
  brings only its own commit (``GET /repos/{owner}/{repo}/commits/{sha}``).

Incremental: the cursor holds the newest deployment id up to which every deployment had
finished, the creation time from which workflow runs are asked for again, and the last
successful commit of each environment (the start of the next compare). A deployment or run
still going is asked for again at the next pull, and imported once it ends.

What responses recorded from api.github.com by client libraries' test suites show: a
deployment can be given no status at all (``[]``) or stay ``queued`` for years, and a status
can be posted again long after the deployment ended (five ``success`` statuses from 2014 to
2018 on one).
So a deployment finishes when it first reached the state it ended in, and one that has shown
no sign of life for ``GIVE_UP_AFTER`` (GitHub fails a job still waiting for its environment
after 30 days) is skipped rather than holding every later deployment back for ever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any

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
    raw_commits,
    text,
    time_of,
    with_commits,
)

DEPLOYMENT_RESULTS = {"success": "succeeded", "failure": "failed", "error": "failed"}
# A deployment whose newest status is one of these is still going.
GOING = {"queued", "pending", "in_progress", "waiting"}
RUN_RESULTS = {"success": "succeeded", "failure": "failed", "timed_out": "failed"}
API_VERSION = "2022-11-28"
# Deployments looked at in one pull (each costs a request for its statuses, more for commits).
MAX_PER_PULL = 300
# A deployment with no final status and nothing new for this long is no longer waited for.
GIVE_UP_AFTER = dt.timedelta(days=30)


class GitHubConnector(ConnectorOptions):
    """GitHub deployments (Deployments API) and Actions workflow runs of one repository."""

    repository: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] = Field(
        description="owner/name"
    )
    service: Name = Field(description="the Conveyor service its deployments are of")
    api_url: str = Field("https://api.github.com", description="GitHub Enterprise: its API URL")
    deployments: bool = Field(True, description="pull the Deployments API")
    workflow: Name | None = Field(
        None,
        description="also take the runs of this workflow (file name or id) as deployments",
    )
    workflow_environment: Name = Field(
        "production", description="the environment the workflow's runs deploy to"
    )


def api(options: GitHubConnector, token: str | None) -> Api:
    headers = {"X-GitHub-Api-Version": API_VERSION, "Accept": "application/vnd.github+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Api(options.api_url, headers)


def pull(api: Api, options: GitHubConnector, cursor: Mapping[str, Any]) -> Pull:
    found = Pull(cursor=dict(cursor))
    shas: dict[str, str] = dict(cursor.get("shas") or {})
    if options.deployments:
        _deployments(api, options, found, shas)
    if options.workflow:
        _runs(api, options, found, shas)
    return found


def _deployments(api: Api, options: GitHubConnector, found: Pull, shas: dict[str, str]) -> None:
    repo = f"/repos/{options.repository}"
    since = int(found.cursor.get("deployment") or 0)
    new: list[dict[str, Any]] = []
    for page in api.link_pages(f"{repo}/deployments", {"per_page": 100}):
        listed = items(page, None, "GitHub deployments")
        newer = [d for d in listed if int(d.get("id") or 0) > since]
        new += newer
        if len(newer) < len(listed):
            break  # newest first: the rest were pulled before
    chain = dict(shas)
    done_up_to, blocked = since, False
    # Oldest first, and a bounded number per pull (a status request each): a first sync of a
    # long history goes on where it stopped at the next one, within GitHub's rate limit.
    for deployment in sorted(new, key=lambda d: int(d["id"]))[:MAX_PER_PULL]:
        environment = found.environment(options, str(deployment.get("environment") or ""))
        final = None
        if environment is not None:
            statuses = items(
                api.get(f"{repo}/deployments/{deployment['id']}/statuses", {"per_page": 100})[0],
                None,
                "GitHub deployment statuses",
            )
            final = _final(statuses)
            going = not statuses or statuses[0].get("state") in GOING
            if final is None and going and not _abandoned(deployment, statuses):
                blocked = True  # still going: asked for again next time
                continue
        if not blocked:
            done_up_to = int(deployment["id"])
        if final is None or environment is None:
            if environment is not None:
                found.skipped += 1  # inactive, or abandoned, before it succeeded or failed
            continue
        result = DEPLOYMENT_RESULTS[str(final["state"])]
        sha = str(deployment.get("sha") or "")
        record = _record(
            api,
            options,
            f"deployment-{deployment['id']}",
            environment,
            sha,
            chain,
            started=deployment.get("created_at"),
            finished=final.get("created_at"),
            result=result,
        )
        found.records.append(record)
        if not blocked and result == "succeeded":
            shas[environment] = sha
    found.cursor["deployment"] = done_up_to
    found.cursor["shas"] = shas


def _final(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The status at which a deployment ended (statuses come newest first): the first of the
    newest run of success, failure or error statuses, so that one posted again later (GitHub
    keeps every status) does not move the end of the deployment."""
    ended = [i for i, s in enumerate(statuses) if s.get("state") in DEPLOYMENT_RESULTS]
    if not ended:
        return None
    state, oldest = statuses[ended[0]].get("state"), ended[0]
    while oldest + 1 < len(statuses) and statuses[oldest + 1].get("state") == state:
        oldest += 1
    return statuses[oldest]


def _abandoned(deployment: dict[str, Any], statuses: list[dict[str, Any]]) -> bool:
    """Whether a deployment not ended yet has shown nothing new (no status, or none since its
    newest) for GIVE_UP_AFTER."""
    latest = statuses[0] if statuses else deployment
    when = time_of(latest.get("created_at"), f"deployment {deployment.get('id')}: created_at")
    return now() - when > GIVE_UP_AFTER


def now() -> dt.datetime:
    """The time a pull runs at (a test of deployments still going sets it)."""
    return dt.datetime.now(dt.UTC)


def _runs(api: Api, options: GitHubConnector, found: Pull, shas: dict[str, str]) -> None:
    repo = f"/repos/{options.repository}"
    since = found.cursor.get("runs_since")
    params: dict[str, Any] = {"per_page": 100}
    if since:
        params["created"] = f">={since}"
    runs: list[dict[str, Any]] = []
    for page in api.link_pages(f"{repo}/actions/workflows/{options.workflow}/runs", params):
        runs += items(page, "workflow_runs", "GitHub workflow runs")
    environment = found.environment(options, options.workflow_environment)
    going = [r for r in runs if r.get("status") != "completed"]
    going_ids = {r["id"] for r in going}
    runs.sort(key=lambda r: (time_of(r.get("created_at"), "created_at"), int(r["id"])))
    for run in runs:
        result = RUN_RESULTS.get(str(run.get("conclusion")))
        if run["id"] in going_ids or environment is None:
            continue
        if result is None:
            found.skipped += 1  # cancelled, skipped: no deployment happened
            continue
        sha = str(run.get("head_sha") or "")
        record = _record(
            api,
            options,
            f"run-{run['id']}",
            environment,
            sha,
            shas,
            started=run.get("run_started_at") or run.get("created_at"),
            finished=run.get("updated_at"),
            result=result,
        )
        found.records.append(record)
    times = [time_of(r.get("created_at"), "created_at") for r in (going or runs)]
    if times:
        # Runs still going hold the cursor back to the oldest of them; else the newest seen
        # (asked for again: runs created that same second are not lost).
        found.cursor["runs_since"] = text(min(times) if going else max(times))
    found.cursor["shas"] = shas


def _record(
    api: Api,
    options: GitHubConnector,
    id_: str,
    environment: str,
    sha: str,
    shas: dict[str, str],
    *,
    started: Any,
    finished: Any,
    result: str,
) -> dict[str, Any]:
    """The record of a deployment (or a workflow run) and, if it succeeded, its commits."""
    started_at = time_of(started, f"{id_}: started")
    finished_at = time_of(finished, f"{id_}: finished")
    record = deployment_record(
        options.service, environment, id_, sha, started_at, finished_at, result
    )
    return with_commits(record, shas, partial(commits, api, options.repository))


def commits(api: Api, repository: str, previous: str | None, sha: str) -> list[dict[str, Any]]:
    """The commits a deployment of ``sha`` brought: those since the environment's previous
    successful commit, or ``sha`` alone for the first."""
    repo = f"/repos/{repository}"
    listed = raw_commits(
        api,
        previous,
        sha,
        # Paged, GitHub's compare gives at most 100 commits a page (unpaged, the first 250):
        # a deployment bringing more has them on the next pages.
        (f"{repo}/compare/{previous}...{sha}", {"per_page": 100}),
        f"{repo}/commits/{sha}",
        "GitHub",
        linked=True,
    )
    found = []
    for entry in listed:
        info = entry.get("commit") or {}
        committer, author = info.get("committer") or {}, info.get("author") or {}
        found.append(
            commit(
                str(entry.get("sha")),
                text(time_of(committer.get("date"), f"commit {entry.get('sha')}")),
                text(time_of(author["date"], "author date")) if author.get("date") else None,
            )
        )
    return found


EXTENSION = connector(
    "github",
    GitHubConnector,
    api,
    pull,
    "GitHub Deployments and Actions workflow runs, with the commits each brought.",
    order=10,
)
