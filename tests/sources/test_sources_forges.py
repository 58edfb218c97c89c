"""Forge push webhooks: nothing unsigned, oversized or malformed gets through, and a valid
delivery from each forge becomes exactly the Push it describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.sources.forges import (
    Push,
    PushCommit,
    WebhookRejected,
    sign_gitea,
    sign_github,
    verify_and_parse,
)

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "It's a Secret to Everybody"
FORGES = ["github", "gitlab", "gitea"]
ZEROS = "0" * 40
GITHUB_DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
GITLAB_IDEMPOTENCY_KEY = "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
GITLAB_EVENT_UUID = "13792a34-cac6-4fda-95a8-c58e00a3954e"
GITEA_DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"
PUSH_EVENT = {"github": "push", "gitlab": "Push Hook", "gitea": "push"}
TAG_EVENT = {"github": "push", "gitlab": "Tag Push Hook", "gitea": "push"}
OTHER_EVENT = {"github": "issues", "gitlab": "Merge Request Hook", "gitea": "pull_request"}


def payload(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


def edited(name: str, **changes: Any) -> bytes:
    data = json.loads(payload(name))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


def headers(
    forge: str, body: bytes, *, event: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    """The headers each forge really sends with a delivery (trimmed of the irrelevant ones)."""
    event = event or PUSH_EVENT[forge]
    if forge == "github":
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": GITHUB_DELIVERY,
            "X-GitHub-Hook-ID": "109948940",
            "X-Hub-Signature-256": sign_github(secret, body),
        }
    if forge == "gitlab":
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/17.4.0",
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": secret,
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
            "X-Gitlab-Event-UUID": GITLAB_EVENT_UUID,
            "Idempotency-Key": GITLAB_IDEMPOTENCY_KEY,
        }
    return {
        "Content-Type": "application/json",
        "X-Gitea-Delivery": GITEA_DELIVERY,
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": sign_gitea(secret, body),
        "X-Gogs-Event": event,
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": sign_github(secret, body),
    }


SIGNATURE_HEADER = {
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
    "gitea": "X-Gitea-Signature",
}


def unsigned(forge: str, body: bytes) -> dict[str, str]:
    h = headers(forge, body)
    for name in ("X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitea-Signature"):
        h.pop(name, None)
    return h


def rejected(forge: str, h: dict[str, str], body: bytes, **kwargs: Any) -> WebhookRejected:
    kwargs.setdefault("secret", SECRET)
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse(forge, h, body, **kwargs)
    return info.value


def parse(forge: str, name: str, **kwargs: Any) -> Push | None:
    body = payload(name)
    return verify_and_parse(forge, headers(forge, body, **kwargs), body, secret=SECRET)


# -- valid pushes ---------------------------------------------------------------------------


def test_github_push_parses_to_the_exact_push() -> None:
    assert parse("github", "github_push") == Push(
        forge="github",
        delivery_id=GITHUB_DELIVERY,
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


def test_gitlab_push_parses_to_the_exact_push() -> None:
    push = parse("gitlab", "gitlab_push")
    assert push == Push(
        forge="gitlab",
        delivery_id=GITLAB_IDEMPOTENCY_KEY,
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


def test_gitea_push_parses_to_the_exact_push() -> None:
    assert parse("gitea", "gitea_push") == Push(
        forge="gitea",
        delivery_id=GITEA_DELIVERY,
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


def test_forgejo_headers_alone_are_enough() -> None:
    body = payload("gitea_push")
    h = {
        "X-Forgejo-Event": "push",
        "X-Forgejo-Delivery": "8da1c56f-0a54-4b88-8bd5-b4a978302c89",
        "X-Forgejo-Signature": sign_gitea(SECRET, body),
    }
    push = verify_and_parse("gitea", h, body, secret=SECRET)
    assert push is not None
    assert push.delivery_id == "8da1c56f-0a54-4b88-8bd5-b4a978302c89"
    assert push.repository == "gitea/webhooks"


def test_gitlab_delivery_id_falls_back_to_the_event_uuid_before_17_4() -> None:
    body = payload("gitlab_push")
    h = headers("gitlab", body)
    del h["Idempotency-Key"]
    push = verify_and_parse("gitlab", h, body, secret=SECRET)
    assert push is not None
    assert push.delivery_id == GITLAB_EVENT_UUID


@pytest.mark.parametrize("forge", FORGES)
def test_tag_push_has_a_tag_and_no_branch(forge: str) -> None:
    push = parse(forge, f"{forge}_tag_push", event=TAG_EVENT[forge])
    assert push is not None
    assert push.ref.startswith("refs/tags/")
    assert push.branch is None
    assert push.tag == push.ref.removeprefix("refs/tags/")
    assert push.before == ZEROS
    assert not push.deleted
    assert push.commits == ()


@pytest.mark.parametrize("forge", FORGES)
def test_branch_deletion_is_a_push_with_zero_after(forge: str) -> None:
    push = parse(forge, f"{forge}_branch_delete")
    assert push is not None
    assert push.deleted
    assert push.after == ZEROS
    assert push.branch == "feature/old-checkout"
    assert push.commits == ()


def test_sha256_object_ids_are_accepted() -> None:
    before, after = "ab" * 32, "CD" * 32
    body = edited("github_push", before=before, after=after, commits=[])
    push = verify_and_parse("github", headers("github", body), body, secret=SECRET)
    assert push is not None
    assert (push.before, push.after) == (before, after.lower())


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    "branch", ["main;rm -rf $HOME", "$(touch x)", "`id`|tee x&&y", "ünï/'\"*?"]
)
def test_branch_names_with_shell_metacharacters_are_kept_verbatim(forge: str, branch: str) -> None:
    body = edited(f"{forge}_push", ref=f"refs/heads/{branch}")
    push = verify_and_parse(forge, headers(forge, body), body, secret=SECRET)
    assert push is not None
    assert push.ref == f"refs/heads/{branch}"
    assert push.branch == branch


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_header_names_are_case_insensitive(forge: str, case: Any) -> None:
    body = payload(f"{forge}_push")
    h = {case(name): value for name, value in headers(forge, body).items()}
    push = verify_and_parse(forge, h, body, secret=SECRET)
    assert push is not None
    assert push.delivery_id is not None


# -- signatures -----------------------------------------------------------------------------


def test_signing_helpers_match_githubs_published_test_vector() -> None:
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(SECRET, b"Hello, World!") == f"sha256={expected}"
    assert sign_gitea(SECRET, b"Hello, World!") == expected


@pytest.mark.parametrize("forge", FORGES)
def test_wrong_signature_is_refused(forge: str) -> None:
    body = payload(f"{forge}_push")
    error = rejected(forge, headers(forge, body, secret="not the secret"), body)
    assert (error.status, error.message) == (401, "invalid signature")


@pytest.mark.parametrize("forge", FORGES)
def test_missing_signature_is_refused(forge: str) -> None:
    body = payload(f"{forge}_push")
    error = rejected(forge, unsigned(forge, body), body)
    assert (error.status, error.message) == (401, "missing signature")


@pytest.mark.parametrize("forge", FORGES)
def test_empty_signature_header_counts_as_missing(forge: str) -> None:
    # Gitea sends `X-Gitea-Signature:` with an empty value when the hook has no secret.
    body = payload(f"{forge}_push")
    h = unsigned(forge, body) | {SIGNATURE_HEADER[forge]: ""}
    assert rejected(forge, h, body).message == "missing signature"


@pytest.mark.parametrize("forge", ["github", "gitea"])
def test_valid_signature_of_a_different_body_is_refused(forge: str) -> None:
    original = payload(f"{forge}_push")
    tampered = edited(f"{forge}_push", ref="refs/heads/production")
    error = rejected(forge, headers(forge, original), tampered)
    assert (error.status, error.message) == (401, "invalid signature")


@pytest.mark.parametrize("forge", FORGES)
def test_non_ascii_signature_is_refused_not_crashed(forge: str) -> None:
    body = payload(f"{forge}_push")
    h = unsigned(forge, body) | {SIGNATURE_HEADER[forge]: "sha256=\u00e9\udcff"}
    assert rejected(forge, h, body).status == 401


@pytest.mark.parametrize("forge", FORGES)
def test_unsigned_deliveries_are_refused_without_a_secret(forge: str) -> None:
    body = payload(f"{forge}_push")
    error = rejected(forge, unsigned(forge, body), body, secret=None)
    assert (error.status, error.message) == (401, "this service does not accept unsigned webhooks")


@pytest.mark.parametrize("forge", FORGES)
def test_unsigned_deliveries_are_accepted_when_explicitly_allowed(forge: str) -> None:
    body = payload(f"{forge}_push")
    push = verify_and_parse(forge, unsigned(forge, body), body, secret=None, allow_unsigned=True)
    assert push is not None
    assert push.forge == forge


def test_an_empty_secret_is_no_secret() -> None:
    # An HMAC keyed with "" is something anyone can compute.
    body = payload("github_push")
    error = rejected("github", headers("github", body, secret=""), body, secret="")
    assert error.message == "this service does not accept unsigned webhooks"


@pytest.mark.parametrize("forge", FORGES)
def test_non_push_events_are_verified_before_being_ignored(forge: str) -> None:
    body = b'{"action": "opened"}'
    error = rejected(forge, headers(forge, body, event=OTHER_EVENT[forge], secret="wrong"), body)
    assert error.status == 401


# -- size, body and fields ------------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_oversized_body_is_refused_before_anything_else(forge: str) -> None:
    body = b"{" * 101  # not JSON and not signed: the size alone decides
    error = rejected(forge, {}, body, max_bytes=100)
    assert error.status == 413


def test_body_of_exactly_max_bytes_is_accepted() -> None:
    body = payload("github_push")
    h = headers("github", body)
    assert verify_and_parse("github", h, body, secret=SECRET, max_bytes=len(body)) is not None


def test_unknown_forge_is_not_found() -> None:
    body = payload("github_push")
    assert rejected("bitbucket", headers("github", body), body).status == 404


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"ref": "refs/heads/main", "after": ', "body is not valid JSON"),
        (b"[1, 2, 3]", "body is not a JSON object"),
        (b'"refs/heads/main"', "body is not a JSON object"),
        (b'{"ref": "refs/heads/caf\xe9"}', "body is not UTF-8"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "body is not valid JSON: the JSON is nested more than 64 levels deep",
        ),
        (b'{"n": ' + b"9" * 5000 + b"}", "body is not valid JSON"),
    ],
    ids=["truncated", "array", "string", "latin-1", "deeply-nested", "huge-int"],
)
def test_malformed_bodies_are_bad_requests(forge: str, body: bytes, message: str) -> None:
    error = rejected(forge, headers(forge, body), body)
    assert (error.status, error.message) == (400, message)


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"after": ...}, "'after'"),
        ({"after": None}, "'after'"),
        ({"after": "deadbeef"}, "'after'"),
        ({"after": "g" * 40}, "'after'"),
        ({"before": 40}, "'before'"),
        ({"ref": ...}, "'ref'"),
        ({"ref": ["refs/heads/main"]}, "'ref'"),
        ({"ref": "main"}, "'ref'"),
        ({"commits": [{"id": "nope", "message": "x", "author": {"name": "a"}}]}, "'commits[0].id'"),
        ({"commits": [{"id": ZEROS[:-1] + "1", "author": {"name": "a"}}]}, "'commits[0].message'"),
        ({"commits": "many"}, "'commits'"),
    ],
)
def test_missing_or_wrongly_typed_fields_are_named(
    forge: str, changes: dict[str, Any], field: str
) -> None:
    body = edited(f"{forge}_push", **changes)
    error = rejected(forge, headers(forge, body), body)
    assert error.status == 400
    assert field in error.message


@pytest.mark.parametrize("forge", FORGES)
def test_missing_repository_name_is_named(forge: str) -> None:
    key = "project" if forge == "gitlab" else "repository"
    body = edited(f"{forge}_push", **{key: {"id": 1}})
    assert f"'{key}." in rejected(forge, headers(forge, body), body).message


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main\nX-Injected: 1",
        "refs/heads/a\x00b",
        "refs/heads/\x1b[31mred",
        "refs/heads/del\x7f",
    ],
)
def test_control_characters_in_ref_are_refused(forge: str, ref: str) -> None:
    body = edited(f"{forge}_push", ref=ref)
    error = rejected(forge, headers(forge, body), body)
    assert (error.status, error.message) == (400, "field 'ref' contains control characters")


def test_form_encoded_deliveries_get_a_clear_message() -> None:
    body = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"
    h = headers("github", body) | {"Content-Type": "application/x-www-form-urlencoded"}
    assert "application/json" in rejected("github", h, body).message


# -- events that are not pushes -------------------------------------------------------------


def test_github_ping_is_not_a_push() -> None:
    assert parse("github", "github_ping", event="ping") is None


def test_gitea_test_delivery_is_not_a_push() -> None:
    assert parse("gitea", "gitea_test_delivery") is None


@pytest.mark.parametrize("forge", FORGES)
def test_other_events_are_ignored_without_parsing(forge: str) -> None:
    body = b"not even json"
    assert (
        verify_and_parse(forge, headers(forge, body, event=OTHER_EVENT[forge]), body, secret=SECRET)
        is None
    )


def test_gitlab_system_hook_only_counts_pushes() -> None:
    body = edited("gitlab_push", object_kind="repository_update")
    assert (
        verify_and_parse(
            "gitlab", headers("gitlab", body, event="System Hook"), body, secret=SECRET
        )
        is None
    )
    push = parse("gitlab", "gitlab_push", event="System Hook")
    assert push is not None
    assert push.repository == "mike/diaspora"


@pytest.mark.parametrize("forge", FORGES)
def test_missing_event_header_is_a_bad_request(forge: str) -> None:
    body = payload(f"{forge}_push")
    h = {
        k: v
        for k, v in headers(forge, body).items()
        if "event" not in k.lower() or "uuid" in k.lower()
    }
    error = rejected(forge, h, body)
    assert error.status == 400
    assert "Event" in error.message
