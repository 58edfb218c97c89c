"""Push webhooks from GitHub, GitLab and Gitea/Forgejo: verify them, then normalise them.

Checks run cheapest first and nothing is parsed before it is authenticated: forge name, body
size, signature over the raw bytes, event header, then JSON. Refs, messages and names in a
payload are data: they are validated and carried verbatim, never interpreted, and the
repository name is for logs only (nothing is fetched from a URL a payload names).

Headers as the forges send them:

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, ``X-GitHub-Event``
  (``push``, ``ping``, ...), ``X-GitHub-Delivery``.
- GitLab: ``X-Gitlab-Token`` (the shared secret itself, not a signature), ``X-Gitlab-Event``
  (``Push Hook``, ``Tag Push Hook``, ...), ``Idempotency-Key`` (stable across retries, 17.4+)
  or else ``X-Gitlab-Event-UUID``.
- Gitea: ``X-Gitea-Signature: <hex HMAC-SHA256>`` (empty when the hook has no secret),
  ``X-Gitea-Event``, ``X-Gitea-Delivery``; Forgejo also sends the ``X-Forgejo-*`` names.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conveyor import jsonio

Forge = Literal["github", "gitlab", "gitea"]
FORGES: tuple[Forge, ...] = ("github", "gitlab", "gitea")
MAX_BYTES = 1_048_576

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class WebhookRejected(Exception):
    """A delivery refused: `status` is the HTTP status to answer, `message` is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PushCommit:
    sha: str
    message: str
    author_name: str
    author_email: str
    timestamp: str | None


@dataclass(frozen=True)
class Push:
    forge: Forge
    delivery_id: str | None
    ref: str
    before: str
    after: str
    repository: str
    pusher: str | None
    commits: tuple[PushCommit, ...]

    @property
    def branch(self) -> str | None:
        """`main` for refs/heads/main; None for tags and other refs."""
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        """`v1` for refs/tags/v1; None otherwise."""
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None

    @property
    def deleted(self) -> bool:
        """The ref was deleted: `after` is the all-zero object id."""
        return set(self.after) == {"0"}


@dataclass(frozen=True)
class _Spec:
    event_label: str
    event_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    push_events: frozenset[str]


_SPECS: dict[Forge, _Spec] = {
    "github": _Spec(
        "X-GitHub-Event", ("x-github-event",), ("x-github-delivery",), frozenset({"push"})
    ),
    "gitlab": _Spec(
        "X-Gitlab-Event",
        ("x-gitlab-event",),
        ("idempotency-key", "x-gitlab-event-uuid"),
        # System hooks carry pushes too; their object_kind tells them apart (checked later).
        frozenset({"Push Hook", "Tag Push Hook", "System Hook"}),
    ),
    "gitea": _Spec(
        "X-Gitea-Event",
        ("x-gitea-event", "x-forgejo-event"),
        ("x-gitea-delivery", "x-forgejo-delivery"),
        frozenset({"push"}),
    ),
}


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + sign_gitea(secret, body)


def sign_gitea(secret: str, body: bytes) -> str:
    """The `X-Gitea-Signature` / `X-Forgejo-Signature` value for `body` (bare hex)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_and_parse(
    forge: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    allow_unsigned: bool = False,
    max_bytes: int = MAX_BYTES,
) -> Push | None:
    """The push a delivery describes, or None for a ping, a forge's test delivery or another
    event (the caller answers 2xx and does nothing). Raises WebhookRejected otherwise."""
    if forge not in _SPECS:
        raise WebhookRejected(404, "unknown forge")
    name: Forge = forge  # narrowed by the membership test above
    spec = _SPECS[name]
    if len(body) > max_bytes:
        raise WebhookRejected(413, f"body larger than {max_bytes} bytes")
    h = {key.lower(): value.strip() for key, value in headers.items()}
    _verify(name, h, body, secret, allow_unsigned)

    event = _first(h, spec.event_headers)
    if event is None:
        raise WebhookRejected(400, f"missing {spec.event_label} header")
    if event not in spec.push_events:
        return None  # ping, or an event this service does not act on
    if h.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise WebhookRejected(400, "set the webhook content type to application/json")

    data = _load(body)
    if name == "gitlab" and data.get("object_kind", "push") not in ("push", "tag_push"):
        return None  # a system hook about something other than a push
    ref = _ref(data.get("ref"))
    before = _sha(data.get("before"), "before")
    after = _sha(data.get("after"), "after")
    if before == after:
        return None  # Gitea's "Test Delivery"; no real push leaves a ref where it was

    if name == "gitlab":
        repository = _required(_object(data, "project"), "path_with_namespace", "project")
        pusher = _optional(data, "user_username")
    else:
        repository = _required(_object(data, "repository"), "full_name", "repository")
        who = data.get("pusher")
        who = who if isinstance(who, dict) else {}
        pusher = _optional(who, "name" if name == "github" else "login")

    return Push(
        forge=name,
        delivery_id=_first(h, spec.delivery_headers),
        ref=ref,
        before=before,
        after=after,
        repository=repository,
        pusher=pusher,
        commits=_commits(data.get("commits")),
    )


_SIGNATURE_HEADERS: dict[Forge, tuple[str, ...]] = {
    "github": ("x-hub-signature-256",),
    "gitlab": ("x-gitlab-token",),
    "gitea": ("x-gitea-signature", "x-forgejo-signature"),
}


def refuse_before_body(
    forge: str, headers: Mapping[str, str], *, secret: str | None, allow_unsigned: bool
) -> None:
    """Raise WebhookRejected for what the headers alone condemn (unknown forge, no signature
    where one is required), so that a body which would be refused is never read."""
    if forge not in _SPECS:
        raise WebhookRejected(404, "unknown forge")
    if not secret:
        if allow_unsigned:
            return
        raise WebhookRejected(401, "this service does not accept unsigned webhooks")
    h = {key.lower(): value.strip() for key, value in headers.items()}
    if not _first(h, _SIGNATURE_HEADERS[forge]):
        raise WebhookRejected(401, "missing signature")


def _verify(
    forge: Forge, h: Mapping[str, str], body: bytes, secret: str | None, allow_unsigned: bool
) -> None:
    # An empty secret is no secret: anyone can compute an HMAC keyed with "".
    if not secret:
        if allow_unsigned:
            return
        raise WebhookRejected(401, "this service does not accept unsigned webhooks")
    if forge == "gitlab":
        given, expected = h.get("x-gitlab-token"), secret
    elif forge == "github":
        given, expected = h.get("x-hub-signature-256"), sign_github(secret, body)
    else:
        given = _first(h, ("x-gitea-signature", "x-forgejo-signature"))
        expected = sign_gitea(secret, body)
    if not given:
        raise WebhookRejected(401, "missing signature")
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry any byte.
    if not hmac.compare_digest(_bytes(given), _bytes(expected)):
        raise WebhookRejected(401, "invalid signature")


def _load(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected(400, "body is not UTF-8") from None
    try:
        data = jsonio.loads(text)
    except jsonio.TooDeep as exc:
        raise WebhookRejected(400, f"body is not valid JSON: {exc}") from None
    except ValueError:
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    return data


def _ref(value: object) -> str:
    if not isinstance(value, str):
        raise WebhookRejected(400, "field 'ref' is missing or not a string")
    if _CONTROL.search(value):
        raise WebhookRejected(400, "field 'ref' contains control characters")
    if not value.startswith("refs/"):
        raise WebhookRejected(400, "field 'ref' is not a full ref (refs/...)")
    return value


def _sha(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise WebhookRejected(400, f"field '{field}' is missing or not a string")
    sha = value.lower()
    if not _SHA.fullmatch(sha):
        raise WebhookRejected(400, f"field '{field}' is not a 40 or 64 digit hex object id")
    return sha


def _object(data: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = data.get(field)
    if not isinstance(value, dict):
        raise WebhookRejected(400, f"field '{field}' is missing or not an object")
    return value


def _required(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise WebhookRejected(400, f"field '{where}.{key}' is missing or not a string")
    return value


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _commits(raw: object) -> tuple[PushCommit, ...]:
    if raw is None:  # Gitea sends null rather than [] for a push without commits
        return ()
    if not isinstance(raw, list):
        raise WebhookRejected(400, "field 'commits' is not a list")
    commits = []
    for i, item in enumerate(raw):
        where = f"commits[{i}]"
        if not isinstance(item, dict):
            raise WebhookRejected(400, f"field '{where}' is not an object")
        author = item.get("author")
        if not isinstance(author, dict):
            raise WebhookRejected(400, f"field '{where}.author' is missing or not an object")
        commits.append(
            PushCommit(
                sha=_sha(item.get("id"), f"{where}.id"),
                message=_required(item, "message", where),
                author_name=_required(author, "name", f"{where}.author"),
                author_email=_optional(author, "email") or "",  # GitHub may send null
                timestamp=_optional(item, "timestamp"),
            )
        )
    return tuple(commits)


def _first(h: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if h.get(name):
            return h[name]
    return None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
