"""GitLab push webhooks.

GitLab does not sign: ``X-Gitlab-Token`` carries the shared secret itself. The event is in
``X-Gitlab-Event`` (``Push Hook``, ``Tag Push Hook``; ``System Hook`` for an instance's system
hooks, whose ``object_kind`` tells a push from the rest); the delivery id is
``Idempotency-Key`` (stable across retries, GitLab 17.4+) or else ``X-Gitlab-Event-UUID``. A
push names its repository ``project.path_with_namespace`` and its pusher ``user_username``.
GitLab's web UI puts a project's pages under ``/-/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.extensions import Options
from conveyor.forges.base import Forge, extension, object_of, optional, required


class GitLab(Forge):
    name = "gitlab"
    event_label = "X-Gitlab-Event"
    event_headers = ("x-gitlab-event",)
    delivery_headers = ("idempotency-key", "x-gitlab-event-uuid")
    signature_headers = ("x-gitlab-token",)
    # System hooks carry pushes too; their object_kind tells them apart (is_push).
    push_events = frozenset({"Push Hook", "Tag Push Hook", "System Hook"})

    def signature(self, secret: str, body: bytes) -> str:
        return secret  # the token is the secret, whatever the body

    def is_push(self, data: Mapping[str, Any]) -> bool:
        return data.get("object_kind", "push") in ("push", "tag_push")

    def repository(self, data: Mapping[str, Any]) -> str:
        return required(object_of(data, "project"), "path_with_namespace", "project")

    def pusher(self, data: Mapping[str, Any]) -> str | None:
        return optional(data, "user_username")

    def hosts(self, host: str) -> bool:
        return host == "gitlab.com" or host.startswith("gitlab.")

    def commit_url(self, web: str, sha: str) -> str:
        return f"{web}/-/commit/{sha}"

    def compare_url(self, web: str, base: str, sha: str) -> str:
        return f"{web}/-/compare/{base}...{sha}"


class GitLabOptions(Options):
    """GitLab needs nothing configured here: the webhook's secret token is the service's
    (``--webhook-secret``), and the hook posts push and tag push events to
    ``/api/v1/hooks/gitlab/<service>``."""


EXTENSION = extension(
    GitLab(),
    GitLabOptions,
    "GitLab push and tag push webhooks (X-Gitlab-Token), system hooks' pushes; "
    "commit and compare links on GitLab.",
)
