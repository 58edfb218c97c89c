"""GitHub push webhooks.

GitHub signs the body: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``; names
the event in ``X-GitHub-Event`` (``push``; ``ping`` when a hook is created, answered and
ignored) and the delivery in ``X-GitHub-Delivery`` (the same on a redelivery). A push names its
repository ``repository.full_name`` and its pusher ``pusher.name``; a commit's author email may
be null (a hidden email).
"""

from __future__ import annotations

from conveyor.extensions import Options
from conveyor.forges.base import GitHubShapedForge, extension, hmac_sha256


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac_sha256(secret, body)


class GitHub(GitHubShapedForge):
    name = "github"
    event_label = "X-GitHub-Event"
    event_headers = ("x-github-event",)
    delivery_headers = ("x-github-delivery",)
    signature_headers = ("x-hub-signature-256",)
    push_events = frozenset({"push"})
    pusher_key = "name"

    def signature(self, secret: str, body: bytes) -> str:
        return sign_github(secret, body)

    def hosts(self, host: str) -> bool:
        return host == "github.com" or host.endswith(".github.com")


class GitHubOptions(Options):
    """GitHub needs nothing configured here: the webhook's secret is the service's
    (``--webhook-secret``), and the hook posts push events as JSON to
    ``/api/v1/hooks/github/<service>``."""


EXTENSION = extension(
    GitHub(),
    GitHubOptions,
    "GitHub push webhooks (X-Hub-Signature-256); commit and compare links on GitHub.",
)
