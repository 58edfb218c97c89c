"""What every forge shares: the Push a webhook becomes, the refusal, the order of the checks,
and the validation of the fields every push payload carries.

A forge is one `Forge` (in its own module of this package) that says what differs: its header
names, its signature scheme, its event names, where its payload keeps the repository and the
pusher, and the paths of its web UI. The checks run cheapest first, and nothing is parsed
before it is authenticated: forge name and body size (`conveyor.forges.verify_and_parse`),
then `Forge.verify` (signature over the raw bytes), then `Forge.parse` (event header, then
JSON). Refs, messages and names in a payload are data: they are validated and carried
verbatim, never interpreted, and the repository name is for logs only (nothing is fetched from
a URL a payload names).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from conveyor import jsonio
from conveyor.extensions import Extension, Kind, Options

__all__ = [
    "MAX_BYTES",
    "Forge",
    "GitHubShapedForge",
    "Push",
    "PushCommit",
    "WebhookRejected",
    "extension",
    "hmac_sha256",
    "lowered",
]

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
    forge: str
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


class Forge(abc.ABC):
    """One forge's webhooks and web UI. A subclass sets the class attributes and implements
    `signature`, `repository` and `pusher`; the rest is shared. Headers may be given in any
    case: names are compared in lower case, values without surrounding blanks."""

    name: ClassVar[str]
    """The forge's name in the webhook URL (``/hooks/<name>/<service>``) and the registry."""
    event_label: ClassVar[str]
    """The event header as the forge documents it, for messages."""
    event_headers: ClassVar[tuple[str, ...]]
    """Where the event name is, in lower case; the first one present counts."""
    delivery_headers: ClassVar[tuple[str, ...]]
    """Where the delivery id (the same on a redelivery) is, first present first."""
    signature_headers: ClassVar[tuple[str, ...]]
    """Where the signature (or the forge's token) is, first present first."""
    push_events: ClassVar[frozenset[str]]
    """Event names that may carry a push; any other event is answered and ignored."""

    # -- what each forge says -----------------------------------------------------------------

    @abc.abstractmethod
    def signature(self, secret: str, body: bytes) -> str:
        """What the signature header holds for `body` when the hook is set up with `secret`."""

    def is_push(self, data: Mapping[str, Any]) -> bool:
        """Whether a payload of one of the `push_events` is a push (some events carry others)."""
        return True

    @abc.abstractmethod
    def repository(self, data: Mapping[str, Any]) -> str:
        """The repository's name as the forge shows it (``owner/name``), for logs."""

    @abc.abstractmethod
    def pusher(self, data: Mapping[str, Any]) -> str | None:
        """The account that pushed, as the forge names it."""

    def hosts(self, host: str) -> bool:
        """Whether `host` (lower case) is one this forge is known to serve: it decides the
        links of a repository there, whatever forge delivered its pushes."""
        return False

    def likely_hosts(self, host: str) -> bool:
        """Whether `host` is named like one of this forge's, for a repository nothing else
        says the forge of."""
        return False

    def commit_url(self, web: str, sha: str) -> str:
        """A commit's page, given the repository's web address (no trailing slash)."""
        return f"{web}/commit/{sha}"

    def compare_url(self, web: str, base: str, sha: str) -> str:
        """The page of the changes from `base` to `sha`."""
        return f"{web}/compare/{base}...{sha}"

    # -- shared -------------------------------------------------------------------------------

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        secret: str | None,
        allow_unsigned: bool = False,
    ) -> None:
        """Raise WebhookRejected (401) unless `body` is signed with `secret`, or unsigned
        deliveries are allowed and the service has no secret."""
        # An empty secret is no secret: anyone can compute an HMAC keyed with "".
        if not secret:
            if allow_unsigned:
                return
            raise WebhookRejected(401, "this service does not accept unsigned webhooks")
        given = first(lowered(headers), self.signature_headers)
        if not given:
            raise WebhookRejected(401, "missing signature")
        # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry any byte.
        if not hmac.compare_digest(_bytes(given), _bytes(self.signature(secret, body))):
            raise WebhookRejected(401, "invalid signature")

    def refuse_before_body(
        self, headers: Mapping[str, str], *, secret: str | None, allow_unsigned: bool
    ) -> None:
        """Raise WebhookRejected for what the headers alone condemn (no signature where one is
        required), so that a body which would be refused is never read."""
        if not secret:
            if allow_unsigned:
                return
            raise WebhookRejected(401, "this service does not accept unsigned webhooks")
        if not first(lowered(headers), self.signature_headers):
            raise WebhookRejected(401, "missing signature")

    def parse(self, headers: Mapping[str, str], body: bytes) -> Push | None:
        """The push a verified delivery describes, or None for a ping, a forge's test delivery
        or another event. Raises WebhookRejected (400) for what is malformed."""
        h = lowered(headers)
        event = first(h, self.event_headers)
        if event is None:
            raise WebhookRejected(400, f"missing {self.event_label} header")
        if event not in self.push_events:
            return None  # ping, or an event this service does not act on
        if h.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            raise WebhookRejected(400, "set the webhook content type to application/json")

        data = load(body)
        if not self.is_push(data):
            return None
        ref = ref_of(data.get("ref"))
        before = sha_of(data.get("before"), "before")
        after = sha_of(data.get("after"), "after")
        if before == after:
            return None  # Gitea's "Test Delivery"; no real push leaves a ref where it was
        repository = self.repository(data)
        pusher = self.pusher(data)
        return Push(
            forge=self.name,
            delivery_id=first(h, self.delivery_headers),
            ref=ref,
            before=before,
            after=after,
            repository=repository,
            pusher=pusher,
            commits=commits_of(data.get("commits")),
        )

    def links(self, web: str, sha: str, base: str | None = None) -> dict[str, str]:
        """The web UI's links for a commit of the repository at `web` (and the changes from
        `base`, when there is one): what the release record shows."""
        found = {"forge": self.name, "commit": self.commit_url(web, sha)}
        if base and base != sha:
            found["compare"] = self.compare_url(web, base, sha)
        return found


class GitHubShapedForge(Forge):
    """A forge whose push payload has GitHub's shape, as Gitea's and Forgejo's do: the
    repository at ``repository.full_name``, the pusher at ``pusher.<pusher_key>``."""

    pusher_key: ClassVar[str]
    """Which field of ``pusher`` names the account (GitHub: name, Gitea: login)."""

    def repository(self, data: Mapping[str, Any]) -> str:
        return required(object_of(data, "repository"), "full_name", "repository")

    def pusher(self, data: Mapping[str, Any]) -> str | None:
        who = data.get("pusher")
        return optional(who if isinstance(who, dict) else {}, self.pusher_key)


# -- helpers for the forges ---------------------------------------------------------------------


def hmac_sha256(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `body` keyed with `secret`, as GitHub and Gitea sign."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names in lower case, values without surrounding blanks."""
    return {key.lower(): value.strip() for key, value in headers.items()}


def first(h: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first of `names` present with a value (an empty header counts as missing)."""
    for name in names:
        if h.get(name):
            return h[name]
    return None


def load(body: bytes) -> dict[str, Any]:
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


def ref_of(value: object) -> str:
    if not isinstance(value, str):
        raise WebhookRejected(400, "field 'ref' is missing or not a string")
    if _CONTROL.search(value):
        raise WebhookRejected(400, "field 'ref' contains control characters")
    if not value.startswith("refs/"):
        raise WebhookRejected(400, "field 'ref' is not a full ref (refs/...)")
    return value


def sha_of(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise WebhookRejected(400, f"field '{field}' is missing or not a string")
    sha = value.lower()
    if not _SHA.fullmatch(sha):
        raise WebhookRejected(400, f"field '{field}' is not a 40 or 64 digit hex object id")
    return sha


def object_of(data: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = data.get(field)
    if not isinstance(value, dict):
        raise WebhookRejected(400, f"field '{field}' is missing or not an object")
    return value


def required(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise WebhookRejected(400, f"field '{where}.{key}' is missing or not a string")
    return value


def optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def commits_of(raw: object) -> tuple[PushCommit, ...]:
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
                sha=sha_of(item.get("id"), f"{where}.id"),
                message=required(item, "message", where),
                author_name=required(author, "name", f"{where}.author"),
                author_email=optional(author, "email") or "",  # GitHub may send null
                timestamp=optional(item, "timestamp"),
            )
        )
    return tuple(commits)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def extension(forge: Forge, options: type[Options], summary: str) -> Extension:
    """The registry entry of a forge: ``forge`` is its one instance, registered by its name."""
    return Extension(Kind.FORGE, forge.name, options, forge, summary)
