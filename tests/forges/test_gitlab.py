"""GitLab: the X-Gitlab-Token, Push Hook / Tag Push Hook / System Hook, the delivery id before
and after 17.4, and GitLab's /-/ links."""

from __future__ import annotations

from conveyor.forges import Push, PushCommit, links, verify_and_parse
from tests.forges.contract import SECRET, ForgeContract

IDEMPOTENCY_KEY = "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
EVENT_UUID = "13792a34-cac6-4fda-95a8-c58e00a3954e"


class TestGitLab(ForgeContract):
    forge = "gitlab"
    push_event = "Push Hook"
    tag_event = "Tag Push Hook"
    other_event = "Merge Request Hook"
    signature_header = "X-Gitlab-Token"
    signature_headers_sent = ("X-Gitlab-Token",)
    repository_key = "project"

    def headers(
        self, body: bytes, *, event: str | None = None, secret: str = SECRET
    ) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/17.4.0",
            "X-Gitlab-Event": event or self.push_event,
            "X-Gitlab-Token": secret,
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
            "X-Gitlab-Event-UUID": EVENT_UUID,
            "Idempotency-Key": IDEMPOTENCY_KEY,
        }

    def test_push_parses_to_the_exact_push(self) -> None:
        push = self.parse("push")
        assert push == Push(
            forge="gitlab",
            delivery_id=IDEMPOTENCY_KEY,
            ref="refs/heads/master",
            before="95790bf891e76fee5e1747ab589903a6a1f80f22",
            after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            repository="mike/diaspora",
            pusher="jsmith",
            commits=(
                PushCommit(
                    sha="b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
                    message="Update Catalan translation to e38cb41.\n\n"
                    "See https://gitlab.com/gitlab-org/gitlab for more information",
                    author_name="Jordi Mallach",
                    author_email="jordi@softcatala.org",
                    timestamp="2011-12-12T14:27:31+02:00",
                ),
                PushCommit(
                    sha="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                    message="fixed readme",
                    author_name="GitLab dev user",
                    author_email="gitlabdev@dv6700.(none)",
                    timestamp="2012-01-03T23:36:29+02:00",
                ),
            ),
        )
        assert push.branch == "master"
        assert not push.deleted

    def test_delivery_id_falls_back_to_the_event_uuid_before_17_4(self) -> None:
        body = self.payload("push")
        h = self.headers(body)
        del h["Idempotency-Key"]
        push = verify_and_parse("gitlab", h, body, secret=SECRET)
        assert push is not None
        assert push.delivery_id == EVENT_UUID

    def test_system_hook_only_counts_pushes(self) -> None:
        body = self.edited("push", object_kind="repository_update")
        h = self.headers(body, event="System Hook")
        assert verify_and_parse("gitlab", h, body, secret=SECRET) is None
        push = self.parse("push", event="System Hook")
        assert push is not None
        assert push.repository == "mike/diaspora"

    def test_the_token_is_the_secret_whatever_the_body(self) -> None:
        # GitLab sends the secret itself, not a signature: another body passes the check.
        h = self.headers(self.payload("push"))
        body = self.edited("push", ref="refs/heads/production")
        push = verify_and_parse("gitlab", h, body, secret=SECRET)
        assert push is not None
        assert push.ref == "refs/heads/production"


def test_links_put_gitlabs_pages_under_dash() -> None:
    assert links("https://gitlab.com/g/sub/shop", None, "abc", "def") == {
        "forge": "gitlab",
        "commit": "https://gitlab.com/g/sub/shop/-/commit/abc",
        "compare": "https://gitlab.com/g/sub/shop/-/compare/def...abc",
    }
    assert (links("git@gitlab.example.org:g/shop.git", "gitlab", "abc") or {})["commit"] == (
        "https://gitlab.example.org/g/shop/-/commit/abc"
    )
    assert (links("ssh://git@gitlab.internal:2222/g/shop.git", None, "abc") or {}).get(
        "forge"
    ) == "gitlab"
