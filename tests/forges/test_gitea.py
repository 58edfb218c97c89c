"""Gitea and Forgejo: X-Gitea-Signature (or the X-Forgejo-* headers alone), the test delivery,
null commits, and links on self-hosted instances."""

from __future__ import annotations

from conveyor.forges import Push, PushCommit, links, verify_and_parse
from conveyor.forges.gitea import sign_gitea
from conveyor.forges.github import sign_github
from tests.forges.contract import SECRET, SignedBodyContract

DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"


class TestGitea(SignedBodyContract):
    forge = "gitea"
    push_event = tag_event = "push"
    other_event = "pull_request"
    signature_header = "X-Gitea-Signature"
    # Gitea also sends GitHub's signature header, which Conveyor does not read for Gitea.
    signature_headers_sent = ("X-Gitea-Signature", "X-Hub-Signature-256")

    def headers(
        self, body: bytes, *, event: str | None = None, secret: str = SECRET
    ) -> dict[str, str]:
        event = event or self.push_event
        return {
            "Content-Type": "application/json",
            "X-Gitea-Delivery": DELIVERY,
            "X-Gitea-Event": event,
            "X-Gitea-Event-Type": event,
            "X-Gitea-Signature": sign_gitea(secret, body),
            "X-Gogs-Event": event,
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": sign_github(secret, body),
        }

    def test_push_parses_to_the_exact_push(self) -> None:
        assert self.parse("push") == Push(
            forge="gitea",
            delivery_id=DELIVERY,
            ref="refs/heads/develop",
            before="28e1879d029cb852e4844d9c718537df08844e03",
            after="bffeb74224043ba2feb48d137756c8a9331c449a",
            repository="gitea/webhooks",
            pusher="gitea",
            commits=(
                PushCommit(
                    sha="bffeb74224043ba2feb48d137756c8a9331c449a",
                    message="Webhooks Yay!",
                    author_name="Gitea",
                    author_email="someone@gitea.io",
                    timestamp="2017-03-13T13:52:11-04:00",
                ),
            ),
        )

    def test_forgejo_headers_alone_are_enough(self) -> None:
        body = self.payload("push")
        h = {
            "X-Forgejo-Event": "push",
            "X-Forgejo-Delivery": "8da1c56f-0a54-4b88-8bd5-b4a978302c89",
            "X-Forgejo-Signature": sign_gitea(SECRET, body),
        }
        push = verify_and_parse("gitea", h, body, secret=SECRET)
        assert push is not None
        assert push.delivery_id == "8da1c56f-0a54-4b88-8bd5-b4a978302c89"
        assert push.repository == "gitea/webhooks"

    def test_test_delivery_is_not_a_push(self) -> None:
        assert self.parse("test_delivery") is None

    def test_null_commits_are_no_commits(self) -> None:
        body = self.edited("push", commits=None)
        push = verify_and_parse("gitea", self.headers(body), body, secret=SECRET)
        assert push is not None
        assert push.commits == ()


def test_links_on_a_self_hosted_instance_follow_the_delivering_forge() -> None:
    assert links("http://git.internal/team/shop.git", "gitea", "abc", "def") == {
        "forge": "gitea",
        "commit": "http://git.internal/team/shop/commit/abc",
        "compare": "http://git.internal/team/shop/compare/def...abc",
    }
    # Named like a Gitea host: a guess, taken only when no delivery names the forge.
    assert (links("https://codeberg.org/team/shop", None, "abc") or {}).get("forge") == "gitea"
    assert (links("https://forgejo.example.org/t/shop", None, "abc") or {}).get("forge") == "gitea"
    assert links("https://codeberg.org/team/shop", "poll", "abc") is None
