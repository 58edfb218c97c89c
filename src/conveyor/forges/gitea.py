"""Gitea and Forgejo push webhooks.

Gitea signs the body: ``X-Gitea-Signature: <hex HMAC-SHA256>`` (bare hex; the header is empty
when the hook has no secret), with the event in ``X-Gitea-Event`` and the delivery id in
``X-Gitea-Delivery``; Forgejo also sends the ``X-Forgejo-*`` names, which are enough alone. A
push names its repository ``repository.full_name`` and its pusher ``pusher.login``, and sends
``"commits": null`` for a push without commits. "Test Delivery" in Gitea's hook settings sends
a push whose ``before`` and ``after`` are equal: it is answered and ignored.
"""

from __future__ import annotations

from conveyor.extensions import Options
from conveyor.forges.base import GitHubShapedForge, extension, hmac_sha256


def sign_gitea(secret: str, body: bytes) -> str:
    """The `X-Gitea-Signature` / `X-Forgejo-Signature` value for `body` (bare hex)."""
    return hmac_sha256(secret, body)


class Gitea(GitHubShapedForge):
    name = "gitea"
    event_label = "X-Gitea-Event"
    event_headers = ("x-gitea-event", "x-forgejo-event")
    delivery_headers = ("x-gitea-delivery", "x-forgejo-delivery")
    signature_headers = ("x-gitea-signature", "x-forgejo-signature")
    push_events = frozenset({"push"})
    pusher_key = "login"

    def signature(self, secret: str, body: bytes) -> str:
        return sign_gitea(secret, body)

    def likely_hosts(self, host: str) -> bool:
        # Self-hosted, so a guess: taken only when no delivery says which forge it is.
        return host.startswith(("gitea.", "forgejo.")) or host == "codeberg.org"


class GiteaOptions(Options):
    """Gitea and Forgejo need nothing configured here: the webhook's secret is the service's
    (``--webhook-secret``), and the hook (content type application/json) posts push events to
    ``/api/v1/hooks/gitea/<service>``."""


EXTENSION = extension(
    Gitea(),
    GiteaOptions,
    "Gitea and Forgejo push webhooks (X-Gitea-Signature, X-Forgejo-*); commit and "
    "compare links on Gitea, Forgejo and Codeberg.",
)
