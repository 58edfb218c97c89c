"""Forges that send push webhooks (GitHub, GitLab, Gitea/Forgejo): one module each, registered
in conveyor.extensions as ``Kind.FORGE`` with a `Forge` as its implementation.

Callers go through the functions here, which look the forge up by name: `verify_and_parse` for
a delivery, `refuse_before_body` for what its headers alone condemn, `links` for a commit's
pages in a forge's web UI. Adding a forge is one module here declaring
``EXTENSION = Extension(kind=Kind.FORGE, name=..., options=..., implementation=<Forge>)`` (or a
plugin's entry point in the ``conveyor.forges`` group), and its test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from conveyor.extensions import ExtensionError, Kind, registry
from conveyor.forges.base import MAX_BYTES, Forge, Push, PushCommit, WebhookRejected, lowered

__all__ = [
    "MAX_BYTES",
    "Forge",
    "Push",
    "PushCommit",
    "WebhookRejected",
    "forge",
    "known",
    "links",
    "names",
    "refuse_before_body",
    "verify_and_parse",
]


def names() -> list[str]:
    """The registered forges' names, built-ins first."""
    return registry().names(Kind.FORGE)


def known(name: str) -> bool:
    """Whether `name` is a registered forge (a webhook URL may name anything)."""
    return name in registry().of(Kind.FORGE)


def forge(name: str) -> Forge:
    """The registered forge `name`; WebhookRejected (404) for an unknown one."""
    try:
        extension = registry().get(Kind.FORGE, name)
    except ExtensionError:
        raise WebhookRejected(404, "unknown forge") from None
    implementation = extension.implementation
    if not isinstance(implementation, Forge):
        raise ExtensionError(
            f"forge {name!r} from {extension.origin or '?'}: its implementation is not a "
            "conveyor.forges.Forge"
        )
    return implementation


def verify_and_parse(
    forge_name: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    allow_unsigned: bool = False,
    max_bytes: int = MAX_BYTES,
) -> Push | None:
    """The push a delivery describes, or None for a ping, a forge's test delivery or another
    event (the caller answers 2xx and does nothing). Raises WebhookRejected otherwise.

    Cheapest first: the forge's name (404), the body's size (413), the signature over the raw
    bytes (401), then the event header and the JSON (400)."""
    found = forge(forge_name)
    if len(body) > max_bytes:
        raise WebhookRejected(413, f"body larger than {max_bytes} bytes")
    h = lowered(headers)
    found.verify(h, body, secret=secret, allow_unsigned=allow_unsigned)
    return found.parse(h, body)


def refuse_before_body(
    forge_name: str, headers: Mapping[str, str], *, secret: str | None, allow_unsigned: bool
) -> None:
    """Raise WebhookRejected for what the headers alone condemn (unknown forge, no signature
    where one is required), so that a body which would be refused is never read."""
    forge(forge_name).refuse_before_body(headers, secret=secret, allow_unsigned=allow_unsigned)


# git@host:owner/repo(.git), ssh://[user@]host[:port]/owner/repo(.git), http(s)://host/owner/repo
_SCP = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>[\w./-]+?)(?:\.git)?/?$")
_URL = re.compile(
    r"^(?P<scheme>https?|ssh|git)://(?:[^@/]+@)?(?P<host>[\w.-]+)(?::\d+)?/(?P<path>[\w./-]+?)(?:\.git)?/?$"
)


def links(
    repository: str, forge_name: str | None, sha: str, base: str | None = None
) -> dict[str, str] | None:
    """Links to a commit (and the diff from ``base``) in the web UI of the forge hosting
    ``repository`` (a clone URL): ``{"forge", "commit"[, "compare"]}``. The forge is the one
    known to serve the host, else ``forge_name`` (where its pushes came from), else the one
    the host is named like. None for a local path or an unknown host (a link that may be
    wrong is worse than none)."""
    match = _SCP.match(repository) or _URL.match(repository)
    if match is None:
        return None
    host, path = match["host"].lower(), match["path"].strip("/")
    if path.count("/") < 1 or ".." in path:
        return None
    forges = {
        name: extension.implementation
        for name, extension in registry().of(Kind.FORGE).items()
        if isinstance(extension.implementation, Forge)
    }
    chosen = next((f for f in forges.values() if f.hosts(host)), None)
    if chosen is None and forge_name is not None:
        chosen = forges.get(forge_name)
    elif chosen is None:
        chosen = next((f for f in forges.values() if f.likely_hosts(host)), None)
    if chosen is None:
        return None
    # A forge served over plain http (self-hosted) shows its pages there; ssh remotes, on https.
    scheme = "http" if match.groupdict().get("scheme") == "http" else "https"
    return chosen.links(f"{scheme}://{host}/{path}", sha, base)
