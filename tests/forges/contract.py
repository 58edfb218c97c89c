"""What every forge's webhooks must do, as a base class each forge's test subclasses: nothing
unsigned, oversized or malformed gets through, a delivery's pushes, tags and deletions parse,
and any other event is verified, then ignored. A forge's own test module says how its
deliveries look (`headers`) and adds its quirks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conveyor.forges import WebhookRejected, refuse_before_body, verify_and_parse

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "It's a Secret to Everybody"
ZEROS = "0" * 40


def fixture(forge: str, name: str) -> bytes:
    """A payload as the forge documents it, from fixtures/<forge>/<name>.json."""
    return (FIXTURES / forge / f"{name}.json").read_bytes()


def edited(forge: str, name: str, **changes: Any) -> bytes:
    """The fixture with top-level keys replaced (``...`` deletes one)."""
    data = json.loads(fixture(forge, name))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


def rejected(forge: str, h: dict[str, str], body: bytes, **kwargs: Any) -> WebhookRejected:
    kwargs.setdefault("secret", SECRET)
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse(forge, h, body, **kwargs)
    return info.value


class ForgeContract:
    """Subclassed as ``Test<Forge>`` in tests/forges/test_<forge>.py."""

    forge: ClassVar[str]
    push_event: ClassVar[str]
    tag_event: ClassVar[str]
    other_event: ClassVar[str]
    signature_header: ClassVar[str]
    """The header that authenticates a delivery, as the forge spells it."""
    signature_headers_sent: ClassVar[tuple[str, ...]]
    """Every header carrying a signature that the forge sends (removed for unsigned tests)."""
    repository_key: ClassVar[str] = "repository"

    def headers(
        self, body: bytes, *, event: str | None = None, secret: str = SECRET
    ) -> dict[str, str]:
        """The headers the forge really sends with a delivery (trimmed of irrelevant ones)."""
        raise NotImplementedError

    def payload(self, name: str) -> bytes:
        return fixture(self.forge, name)

    def edited(self, name: str, **changes: Any) -> bytes:
        return edited(self.forge, name, **changes)

    def unsigned(self, body: bytes) -> dict[str, str]:
        h = self.headers(body)
        for name in self.signature_headers_sent:
            h.pop(name, None)
        return h

    def rejected(self, h: dict[str, str], body: bytes, **kwargs: Any) -> WebhookRejected:
        return rejected(self.forge, h, body, **kwargs)

    def parse(self, name: str, **kwargs: Any) -> Any:
        body = self.payload(name)
        return verify_and_parse(self.forge, self.headers(body, **kwargs), body, secret=SECRET)

    # -- valid pushes ---------------------------------------------------------------------------

    def test_tag_push_has_a_tag_and_no_branch(self) -> None:
        push = self.parse("tag_push", event=self.tag_event)
        assert push is not None
        assert push.ref.startswith("refs/tags/")
        assert push.branch is None
        assert push.tag == push.ref.removeprefix("refs/tags/")
        assert push.before == ZEROS
        assert not push.deleted
        assert push.commits == ()

    def test_branch_deletion_is_a_push_with_zero_after(self) -> None:
        push = self.parse("branch_delete")
        assert push is not None
        assert push.deleted
        assert push.after == ZEROS
        assert push.branch == "feature/old-checkout"
        assert push.commits == ()

    def test_sha256_object_ids_are_accepted(self) -> None:
        before, after = "ab" * 32, "CD" * 32
        body = self.edited("push", before=before, after=after, commits=[])
        push = verify_and_parse(self.forge, self.headers(body), body, secret=SECRET)
        assert push is not None
        assert (push.before, push.after) == (before, after.lower())

    @pytest.mark.parametrize(
        "branch", ["main;rm -rf $HOME", "$(touch x)", "`id`|tee x&&y", "ünï/'\"*?"]
    )
    def test_branch_names_with_shell_metacharacters_are_kept_verbatim(self, branch: str) -> None:
        body = self.edited("push", ref=f"refs/heads/{branch}")
        push = verify_and_parse(self.forge, self.headers(body), body, secret=SECRET)
        assert push is not None
        assert push.ref == f"refs/heads/{branch}"
        assert push.branch == branch

    @pytest.mark.parametrize("case", [str.lower, str.upper])
    def test_header_names_are_case_insensitive(self, case: Any) -> None:
        body = self.payload("push")
        h = {case(name): value for name, value in self.headers(body).items()}
        push = verify_and_parse(self.forge, h, body, secret=SECRET)
        assert push is not None
        assert push.delivery_id is not None

    # -- signatures -----------------------------------------------------------------------------

    def test_wrong_signature_is_refused(self) -> None:
        body = self.payload("push")
        error = self.rejected(self.headers(body, secret="not the secret"), body)
        assert (error.status, error.message) == (401, "invalid signature")

    def test_missing_signature_is_refused(self) -> None:
        body = self.payload("push")
        error = self.rejected(self.unsigned(body), body)
        assert (error.status, error.message) == (401, "missing signature")

    def test_empty_signature_header_counts_as_missing(self) -> None:
        # Gitea sends `X-Gitea-Signature:` with an empty value when the hook has no secret.
        body = self.payload("push")
        h = self.unsigned(body) | {self.signature_header: ""}
        assert self.rejected(h, body).message == "missing signature"

    def test_non_ascii_signature_is_refused_not_crashed(self) -> None:
        body = self.payload("push")
        h = self.unsigned(body) | {self.signature_header: "sha256=\u00e9\udcff"}
        assert self.rejected(h, body).status == 401

    def test_unsigned_deliveries_are_refused_without_a_secret(self) -> None:
        body = self.payload("push")
        error = self.rejected(self.unsigned(body), body, secret=None)
        assert (error.status, error.message) == (
            401,
            "this service does not accept unsigned webhooks",
        )

    def test_unsigned_deliveries_are_accepted_when_explicitly_allowed(self) -> None:
        body = self.payload("push")
        push = verify_and_parse(
            self.forge, self.unsigned(body), body, secret=None, allow_unsigned=True
        )
        assert push is not None
        assert push.forge == self.forge

    def test_an_empty_secret_is_no_secret(self) -> None:
        # An HMAC keyed with "" is something anyone can compute.
        body = self.payload("push")
        error = self.rejected(self.headers(body, secret=""), body, secret="")
        assert error.message == "this service does not accept unsigned webhooks"

    def test_non_push_events_are_verified_before_being_ignored(self) -> None:
        body = b'{"action": "opened"}'
        h = self.headers(body, event=self.other_event, secret="wrong")
        assert self.rejected(h, body).status == 401

    # -- before the body ------------------------------------------------------------------------

    def test_headers_without_a_signature_are_refused_before_the_body(self) -> None:
        h = self.unsigned(self.payload("push"))
        with pytest.raises(WebhookRejected) as info:
            refuse_before_body(self.forge, h, secret=SECRET, allow_unsigned=False)
        assert (info.value.status, info.value.message) == (401, "missing signature")

    def test_headers_with_a_signature_wait_for_the_body(self) -> None:
        h = self.headers(b"any body", secret="not checked before the body")
        refuse_before_body(self.forge, h, secret=SECRET, allow_unsigned=False)

    @pytest.mark.parametrize("allow_unsigned", [False, True])
    def test_a_service_without_a_secret_is_decided_before_the_body(
        self, allow_unsigned: bool
    ) -> None:
        h = self.unsigned(self.payload("push"))
        if allow_unsigned:
            refuse_before_body(self.forge, h, secret=None, allow_unsigned=True)
            return
        with pytest.raises(WebhookRejected) as info:
            refuse_before_body(self.forge, h, secret="", allow_unsigned=False)
        assert info.value.message == "this service does not accept unsigned webhooks"

    # -- size, body and fields ------------------------------------------------------------------

    def test_oversized_body_is_refused_before_anything_else(self) -> None:
        body = b"{" * 101  # not JSON and not signed: the size alone decides
        assert self.rejected({}, body, max_bytes=100).status == 413

    def test_body_of_exactly_max_bytes_is_accepted(self) -> None:
        body = self.payload("push")
        h = self.headers(body)
        assert verify_and_parse(self.forge, h, body, secret=SECRET, max_bytes=len(body)) is not None

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
    def test_malformed_bodies_are_bad_requests(self, body: bytes, message: str) -> None:
        error = self.rejected(self.headers(body), body)
        assert (error.status, error.message) == (400, message)

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
            (
                {"commits": [{"id": "nope", "message": "x", "author": {"name": "a"}}]},
                "'commits[0].id'",
            ),
            (
                {"commits": [{"id": ZEROS[:-1] + "1", "author": {"name": "a"}}]},
                "'commits[0].message'",
            ),
            ({"commits": "many"}, "'commits'"),
        ],
    )
    def test_missing_or_wrongly_typed_fields_are_named(
        self, changes: dict[str, Any], field: str
    ) -> None:
        body = self.edited("push", **changes)
        error = self.rejected(self.headers(body), body)
        assert error.status == 400
        assert field in error.message

    def test_missing_repository_name_is_named(self) -> None:
        key = self.repository_key
        body = self.edited("push", **{key: {"id": 1}})
        assert f"'{key}." in self.rejected(self.headers(body), body).message

    @pytest.mark.parametrize(
        "ref",
        [
            "refs/heads/main\nX-Injected: 1",
            "refs/heads/a\x00b",
            "refs/heads/\x1b[31mred",
            "refs/heads/del\x7f",
        ],
    )
    def test_control_characters_in_ref_are_refused(self, ref: str) -> None:
        body = self.edited("push", ref=ref)
        error = self.rejected(self.headers(body), body)
        assert (error.status, error.message) == (400, "field 'ref' contains control characters")

    def test_form_encoded_deliveries_get_a_clear_message(self) -> None:
        body = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"
        h = self.headers(body) | {"Content-Type": "application/x-www-form-urlencoded"}
        assert "application/json" in self.rejected(h, body).message

    # -- events that are not pushes -------------------------------------------------------------

    def test_other_events_are_ignored_without_parsing(self) -> None:
        body = b"not even json"
        h = self.headers(body, event=self.other_event)
        assert verify_and_parse(self.forge, h, body, secret=SECRET) is None

    def test_missing_event_header_is_a_bad_request(self) -> None:
        body = self.payload("push")
        h = {
            k: v
            for k, v in self.headers(body).items()
            if "event" not in k.lower() or "uuid" in k.lower()
        }
        error = self.rejected(h, body)
        assert error.status == 400
        assert "Event" in error.message


class SignedBodyContract(ForgeContract):
    """For a forge that signs the body (rather than sending a token)."""

    def test_valid_signature_of_a_different_body_is_refused(self) -> None:
        original = self.payload("push")
        tampered = self.edited("push", ref="refs/heads/production")
        error = self.rejected(self.headers(original), tampered)
        assert (error.status, error.message) == (401, "invalid signature")
