"""Publishing a release's artifacts to an OCI registry, and pinning image references to digests.

A release is published once and then deployed many times, possibly long after its tag moved:
so everything downstream works from the manifest digest (``host/repo@sha256:...``), never from
a tag. `publish_artifacts` therefore reports the digest the registry itself answers for the tag
after the push, and `resolve_image` turns a tag into that same kind of pinned reference.

Both are blocking (the oras client uses `requests`); the server calls them in a worker thread.
The oras client is used without its built-in retries (which sleep for up to two minutes on an
unreachable registry) and every failure becomes one `PublishError` line a user can act on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import oras.client  # type: ignore[import-untyped]
import oras.container  # type: ignore[import-untyped]
import requests

from conveyor import jsonio
from conveyor.errors import ConveyorError

__all__ = [
    "ARTIFACT_TYPE",
    "MANIFEST_TYPES",
    "PublishError",
    "Published",
    "publish_artifacts",
    "resolve_image",
]

ARTIFACT_TYPE = "application/vnd.conveyor.release.v1"
# OCI 1.1 artifacts carry their type in `artifactType` and an empty config ("{}", which is the
# config blob oras already uploads); older readers still find the files as titled layers.
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Indexes first: a multi-platform image must resolve to its index, not to one platform.
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
TITLE = "org.opencontainers.image.title"
# Per socket operation, not per request: a large upload may take longer in total.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_REQUESTS_TIMEOUT = (10.0, 60.0)

# The distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


class PublishError(ConveyorError):
    """Publishing or resolving failed; the message names the registry and the reason."""


@dataclass(frozen=True)
class Published:
    """Where a release's artifact now lives: by tag (for people) and pinned (for machines)."""

    reference: str
    digest: str
    pinned: str


def publish_artifacts(
    *,
    registry: str,
    repository: str,
    tag: str,
    files: Sequence[tuple[Path, str]],
    annotations: Mapping[str, str],
    insecure: bool,
) -> Published:
    """Push ``files`` (path, name in the artifact) as one OCI artifact tagged ``tag``.

    Names may contain folders (``dist/app.whl``): they go into each layer's title, which is
    what `oras pull` writes the file as. The working directory is never changed (oras' path
    check relies on it, so it is turned off and absolute paths are given instead).
    """
    _check_registry(registry)
    if not _REPOSITORY.fullmatch(repository):
        raise PublishError(f"invalid repository name {repository!r} (lowercase a-z, 0-9, ._-/)")
    if not _TAG.fullmatch(tag):
        raise PublishError(f"invalid tag {tag!r} (letters, digits, _ . -; at most 128)")
    if not files:
        raise PublishError(f"nothing to publish to {registry}/{repository}:{tag}")
    sources = _checked_files(files)
    reference = f"{registry}/{repository}:{tag}"

    client = _Client(registry, insecure=insecure)
    target = oras.container.Container(f"x:{tag}", registry=registry)
    # Set the parts directly: oras would read a first component such as "team.a" as a host.
    target.namespace, _, target.repository = repository.rpartition("/")
    target.namespace = target.namespace or None

    with tempfile.TemporaryDirectory(prefix="conveyor-publish-") as tmp:
        # oras names each layer after its file: link every file under a unique name and set the
        # real title through oras' annotation file (looked up by the path it was given).
        staged: list[str] = []
        layer_annotations: dict[str, dict[str, str]] = {}
        for index, (path, name) in enumerate(sources):
            link = os.path.join(tmp, f"file-{index}")
            os.symlink(path, link)
            staged.append(link)
            layer_annotations[link] = {TITLE: name}
        annotation_file = os.path.join(tmp, "annotations.json")
        Path(annotation_file).write_text(json.dumps(layer_annotations), encoding="utf-8")
        try:
            response = client.push(
                target=target,
                files=staged,
                disable_path_validation=True,
                annotation_file=annotation_file,
                manifest_annotations=dict(annotations),
                quiet=True,
            )
        except PublishError:
            raise
        except (requests.RequestException, ValueError, OSError) as exc:
            raise PublishError(f"publishing {reference} failed: {_one_line(str(exc))}") from None
        finally:
            client.session.close()

    pushed = response.headers.get("Docker-Content-Digest")
    digest = _head_digest(registry, repository, tag, insecure=insecure)
    if pushed and pushed != digest:
        raise PublishError(
            f"{reference} points to {digest} right after the push of {pushed}: "
            "another push to the same tag raced this one"
        )
    return Published(reference=reference, digest=digest, pinned=f"{registry}/{repository}@{digest}")


def resolve_image(reference: str, *, insecure: bool) -> str:
    """``host/name[:tag]`` → ``host/name@sha256:...`` as the registry answers it now.

    A reference that already carries a digest is returned unchanged without asking the
    registry: it is already as pinned as it gets.
    """
    if "@" in reference:
        digest = reference.rpartition("@")[2]
        if not _DIGEST.fullmatch(digest):
            raise PublishError(f"image reference {reference!r} has an invalid digest")
        return reference
    host, name, tag = _split_reference(reference)
    digest = _head_digest(host, name, tag, insecure=insecure)
    return f"{host}/{name}@{digest}"


# --- the registry's HTTP API --------------------------------------------------------------------


def _split_reference(reference: str) -> tuple[str, str, str]:
    host, slash, rest = reference.partition("/")
    if not slash or not (host == "localhost" or "." in host or ":" in host):
        raise PublishError(
            f"image reference {reference!r} names no registry host (expected host[:port]/name:tag)"
        )
    name, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        name, tag = rest, "latest"
    if not _REPOSITORY.fullmatch(name):
        raise PublishError(f"image reference {reference!r} has an invalid repository name")
    if not _TAG.fullmatch(tag):
        raise PublishError(f"image reference {reference!r} has an invalid tag")
    return host, name, tag


def _head_digest(host: str, name: str, tag: str, *, insecure: bool) -> str:
    """The digest the registry reports for ``host/name:tag`` (HEAD; GET if HEAD omits it)."""
    reference = f"{host}/{name}:{tag}"
    url = f"{'http' if insecure else 'https'}://{host}/v2/{name}/manifests/{tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as http:
            response = http.head(url, headers=headers)
            digest: str = response.headers.get("Docker-Content-Digest", "")
            # A HEAD answer has no body: GET for the registry's own error message, or for the
            # manifest itself when the registry leaves the digest header out of HEAD.
            if response.status_code >= 400 or (response.status_code == 200 and not digest):
                response = http.get(url, headers=headers)
                digest = response.headers.get("Docker-Content-Digest", "") or (
                    "sha256:" + hashlib.sha256(response.content).hexdigest()
                )
    except httpx.HTTPError as exc:
        raise PublishError(f"registry {host} is unreachable: {_reason(exc)}") from None
    if response.status_code == 404:
        raise PublishError(f"image {reference} not found in registry {host}")
    if response.status_code in (401, 403):
        raise PublishError(
            f"registry {host} refused to show {reference} "
            f"({response.status_code}: {_registry_message(response.status_code, response)})"
        )
    if response.status_code != 200:
        raise PublishError(
            f"registry {host} answered {response.status_code} for {reference}: "
            f"{_registry_message(response.status_code, response)}"
        )
    if not _DIGEST.fullmatch(digest):
        raise PublishError(f"registry {host} reported no valid digest for {reference}")
    return digest


class _Client(oras.client.OrasClient):  # type: ignore[misc]
    """oras' client without retries or silent hangs, and with failures as PublishError."""

    def __init__(self, registry: str, *, insecure: bool) -> None:
        super().__init__(hostname=registry, insecure=insecure)
        self.registry = registry
        # requests has no session-wide timeout; the auth backend shares this very session.
        send = self.session.request

        def request(method: str, url: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("timeout", _REQUESTS_TIMEOUT)
            response: requests.Response = send(method, url, **kwargs)
            return response

        self.session.request = request

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        try:
            response: requests.Response = _UNRETRIED(
                self, url, method, data=data, headers=headers, json=json, stream=stream
            )
        except requests.RequestException as exc:
            raise PublishError(f"registry {self.registry} is unreachable: {_reason(exc)}") from None
        # oras probes a blob with HEAD before uploading it: 404 there only means "not yet".
        if response.status_code >= 400 and not (method == "HEAD" and response.status_code == 404):
            what = "the push" if method in ("POST", "PUT", "PATCH") else f"{method} {url}"
            raise PublishError(
                f"registry {self.registry} refused {what}: {response.status_code} "
                f"{response.reason} ({_registry_message(response.status_code, response)})"
            )
        return response

    def upload_manifest(self, manifest: dict[str, Any], container: Any) -> requests.Response:
        manifest["artifactType"] = ARTIFACT_TYPE
        manifest["config"] = {**manifest["config"], "mediaType": EMPTY_CONFIG_TYPE}
        response: requests.Response = super().upload_manifest(manifest, container)
        return response


# The undecorated request: oras wraps it in a retry loop that sleeps 3 s, 5 s, 11 s, 29 s, 83 s.
_UNRETRIED: Callable[..., requests.Response] = oras.client.OrasClient.do_request.__wrapped__


# --- small helpers ------------------------------------------------------------------------------


def _check_registry(registry: str) -> None:
    if not registry or "/" in registry or "://" in registry or any(c.isspace() for c in registry):
        raise PublishError(f"invalid registry {registry!r} (expected host[:port])")


def _checked_files(files: Sequence[tuple[Path, str]]) -> list[tuple[str, str]]:
    """Absolute paths and normalised names ("./dist//a" is "dist/a"); a name that could
    escape the folder it is pulled into is refused rather than left to each client."""
    checked: list[tuple[str, str]] = []
    names: set[str] = set()
    for path, given in files:
        pure = PurePosixPath(given)
        name = str(pure)
        if not given or pure.is_absolute() or ".." in pure.parts or "\\" in given or name == ".":
            raise PublishError(f"invalid artifact file name {given!r} (a relative path, no '..')")
        if name in names:
            raise PublishError(f"artifact file name {name!r} is given twice")
        names.add(name)
        absolute = Path(path).resolve()
        if not absolute.is_file():
            what = "is not a regular file" if absolute.exists() else "does not exist"
            raise PublishError(f"cannot publish {path}: it {what}")
        checked.append((str(absolute), name))
    return checked


def _registry_message(status: int, response: httpx.Response | requests.Response) -> str:
    """The registry's own words: its JSON `errors`, else its text, else the status phrase."""
    text = response.text
    try:
        body = jsonio.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        parts = []
        for error in body["errors"]:
            if isinstance(error, dict):
                code, message = error.get("code", ""), error.get("message", "")
                parts.append(f"{code}: {message}" if code and message else str(code or message))
        if parts:
            return _one_line("; ".join(parts))
    if text.strip():
        return _one_line(text)[:200]
    phrase = response.reason if isinstance(response, requests.Response) else response.reason_phrase
    return phrase or f"status {status}"


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words ("connection refused")."""
    if isinstance(exc, httpx.TimeoutException | requests.Timeout):
        return "timed out"
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return f"cannot resolve the host name ({error.strerror})"
        if isinstance(error, TimeoutError):
            return "timed out"
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno).lower()
        linked = (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args)
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    return " ".join(text.split())
