"""GitHub: X-Hub-Signature-256 over the body, X-GitHub-Event, pings, and GitHub's links."""

from __future__ import annotations

from conveyor.forges import Push, PushCommit, links
from conveyor.forges.gitea import sign_gitea
from conveyor.forges.github import sign_github
from tests.forges.contract import SECRET, SignedBodyContract

DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


class TestGitHub(SignedBodyContract):
    forge = "github"
    push_event = tag_event = "push"
    other_event = "issues"
    signature_header = "X-Hub-Signature-256"
    signature_headers_sent = ("X-Hub-Signature-256",)

    def headers(
        self, body: bytes, *, event: str | None = None, secret: str = SECRET
    ) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": event or self.push_event,
            "X-GitHub-Delivery": DELIVERY,
            "X-GitHub-Hook-ID": "109948940",
            "X-Hub-Signature-256": sign_github(secret, body),
        }

    def test_push_parses_to_the_exact_push(self) -> None:
        assert self.parse("push") == Push(
            forge="github",
            delivery_id=DELIVERY,
            ref="refs/heads/main",
            before="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            after="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            repository="Codertocat/Hello-World",
            pusher="Codertocat",
            commits=(
                PushCommit(
                    sha="2a1c7a1e7d3b0f0c0c2d9a2d8ae5f0b7e1d2c3f4",
                    message="Update README.md",
                    author_name="Codertocat",
                    author_email="21031067+Codertocat@users.noreply.github.com",
                    timestamp="2019-05-15T15:20:30-05:00",
                ),
                PushCommit(
                    sha="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                    message="Add checkout step\n\nRuns `make test` before deploying.",
                    author_name="Mona Lisa Octocat",
                    author_email="",  # GitHub sends null for a hidden email
                    timestamp="2019-05-15T15:24:09-05:00",
                ),
            ),
        )

    def test_ping_is_not_a_push(self) -> None:
        assert self.parse("ping", event="ping") is None


def test_signing_matches_githubs_published_test_vector() -> None:
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(SECRET, b"Hello, World!") == f"sha256={expected}"
    assert sign_gitea(SECRET, b"Hello, World!") == expected  # Gitea's is the bare hex


def test_links_on_github_whatever_delivered_the_push() -> None:
    for repository in ("https://github.com/acme/shop.git", "git@github.com:acme/shop.git"):
        assert links(repository, None, "abc", "def") == {
            "forge": "github",
            "commit": "https://github.com/acme/shop/commit/abc",
            "compare": "https://github.com/acme/shop/compare/def...abc",
        }
    assert (links("https://github.com/acme/shop", "gitlab", "abc") or {})["forge"] == "github"
    assert links("https://ghe.github.com/acme/shop", None, "abc") is not None
