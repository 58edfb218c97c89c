"""Publishing artifacts to a real OCI registry and pinning image tags to digests.

Everything runs against `docker-registry serve` (distribution 2.8) from tests/registry.py; images
for `resolve_image` are pushed by the podman of tests/podman.py, a tool other than the one under
test, so the digests are checked against what the registry itself reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import oras.client
import pytest

from conveyor.delivery.publish import (
    ARTIFACT_TYPE,
    Published,
    PublishError,
    publish_artifacts,
    resolve_image,
)
from conveyor.errors import ConveyorError
from tests.podman import Podman, podman_session  # noqa: F401
from tests.registry import (
    Registry,
    readonly_registry_session,  # noqa: F401
    registry_session,  # noqa: F401
)
from tests.serverproc import free_port

TITLE = "org.opencontainers.image.title"
SHA = "ab12cd3ef4567890ab12cd3ef4567890ab12cd3e"


def release_files(tmp_path: Path) -> list[tuple[Path, str]]:
    wheel = tmp_path / "build" / "shop_api-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(bytes(range(256)) * 64 + b"\x00end")
    notes = tmp_path / "notes.txt"
    notes.write_text("release r12\n")
    return [(wheel, "dist/shop_api-1.0-py3-none-any.whl"), (notes, "RELEASE-NOTES.txt")]


# --- publish_artifacts ---------------------------------------------------------------------------


@pytest.mark.integration
def test_published_files_come_back_byte_for_byte(registry: Registry, tmp_path: Path) -> None:
    files = release_files(tmp_path / "src")
    cwd = Path.cwd()

    published = publish_artifacts(
        registry=registry.host,
        repository="shop-api",
        tag="r12-ab12cd3",
        files=files,
        annotations={
            "org.opencontainers.image.revision": SHA,
            "org.opencontainers.image.title": "shop-api r12",
        },
        insecure=True,
    )

    assert Path.cwd() == cwd
    # The digest is the registry's own, for the tag, and the pinned reference uses it.
    digest = registry.digest("shop-api", "r12-ab12cd3")
    assert published == Published(
        reference=f"{registry.host}/shop-api:r12-ab12cd3",
        digest=digest,
        pinned=f"{registry.host}/shop-api@{digest}",
    )
    manifest = registry.manifest("shop-api", digest).json()
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["annotations"]["org.opencontainers.image.revision"] == SHA
    assert manifest["annotations"]["org.opencontainers.image.title"] == "shop-api r12"
    titles = [
        layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]
    ]
    assert titles == [name for _, name in files]

    # Pulled back by digest with oras itself: same names, same bytes.
    out = tmp_path / "pulled"
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    pulled = client.pull(target=published.pinned, outdir=str(out))
    assert sorted(Path(p).relative_to(out).as_posix() for p in pulled) == sorted(
        name for _, name in files
    )
    for path, name in files:
        assert (out / name).read_bytes() == path.read_bytes()
    assert Path.cwd() == cwd


@pytest.mark.integration
def test_publishing_again_moves_the_tag_and_reports_the_new_digest(
    registry: Registry, tmp_path: Path
) -> None:
    files = release_files(tmp_path)
    first = publish_artifacts(
        registry=registry.host,
        repository="team/web",
        tag="latest",
        files=files,
        annotations={"org.opencontainers.image.revision": "1" * 40},
        insecure=True,
    )
    second = publish_artifacts(
        registry=registry.host,
        repository="team/web",
        tag="latest",
        files=files[:1],
        annotations={"org.opencontainers.image.revision": "2" * 40},
        insecure=True,
    )
    assert first.digest != second.digest
    assert registry.digest("team/web", "latest") == second.digest
    # The first publication is still there by digest: that is what pinning is for.
    assert registry.manifest("team/web", first.digest).status_code == 200


@pytest.mark.integration
def test_unreachable_registry_is_one_clear_line(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(PublishError) as caught:
        publish_artifacts(
            registry=host,
            repository="shop-api",
            tag="r1",
            files=release_files(tmp_path),
            annotations={},
            insecure=True,
        )
    assert caught.value.message == f"registry {host} is unreachable: connection refused"
    assert isinstance(caught.value, ConveyorError)

    with pytest.raises(PublishError) as caught:
        resolve_image(f"{host}/shop-api:r1", insecure=True)
    assert caught.value.message == f"registry {host} is unreachable: connection refused"


@pytest.mark.integration
def test_read_only_registry_refusal_is_reported(
    readonly_registry: Registry, tmp_path: Path
) -> None:
    with pytest.raises(PublishError) as caught:
        publish_artifacts(
            registry=readonly_registry.host,
            repository="shop-api",
            tag="r1",
            files=release_files(tmp_path),
            annotations={},
            insecure=True,
        )
    message = caught.value.message
    assert message.startswith(f"registry {readonly_registry.host} refused the push: 405")
    assert "Method not allowed" in message
    assert "\n" not in message
    assert readonly_registry.manifest("shop-api", "r1").status_code == 404


# --- resolve_image -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pushed(podman: Podman, registry: Registry) -> dict[str, str]:
    """The busybox image pushed by podman as an OCI manifest, a Docker v2 manifest and an OCI
    index: name → reference by tag."""
    refs = {
        "oci": f"{registry.host}/tools/busybox:oci",
        "v2s2": f"{registry.host}/tools/busybox:v2s2",
        "index": f"{registry.host}/tools/busybox:multi",
    }
    for fmt in ("oci", "v2s2"):
        podman("push", "--tls-verify=false", "--format", fmt, podman.image, refs[fmt])
    podman("manifest", "create", "conveyor-test-list")
    try:
        podman("manifest", "add", "conveyor-test-list", f"containers-storage:{podman.image}")
        podman("manifest", "push", "--tls-verify=false", "conveyor-test-list", refs["index"])
    finally:
        podman("manifest", "rm", "conveyor-test-list", check=False)
    return refs


@pytest.mark.integration
@pytest.mark.parametrize(
    ("kind", "media_type"),
    [
        ("oci", "application/vnd.oci.image.manifest.v1+json"),
        ("v2s2", "application/vnd.docker.distribution.manifest.v2+json"),
        ("index", "application/vnd.oci.image.index.v1+json"),
    ],
)
def test_resolve_image_gives_the_registry_digest(
    pushed: dict[str, str], registry: Registry, kind: str, media_type: str
) -> None:
    reference = pushed[kind]
    tag = reference.rpartition(":")[2]
    served = registry.manifest("tools/busybox", tag)
    assert served.headers["Content-Type"] == media_type

    pinned = resolve_image(reference, insecure=True)

    digest = registry.digest("tools/busybox", tag)
    assert pinned == f"{registry.host}/tools/busybox@{digest}"
    # What the registry serves under that digest is what the tag served.
    assert registry.manifest("tools/busybox", digest).content == served.content


@pytest.mark.integration
def test_resolve_image_defaults_to_latest(podman: Podman, registry: Registry) -> None:
    podman("push", "--tls-verify=false", podman.image, f"{registry.host}/tools/plain")
    digest = registry.digest("tools/plain", "latest")
    assert resolve_image(f"{registry.host}/tools/plain", insecure=True) == (
        f"{registry.host}/tools/plain@{digest}"
    )


@pytest.mark.integration
def test_resolve_image_unknown_tag(registry: Registry) -> None:
    with pytest.raises(PublishError) as caught:
        resolve_image(f"{registry.host}/tools/nothing:1.0", insecure=True)
    assert caught.value.message == (
        f"image {registry.host}/tools/nothing:1.0 not found in registry {registry.host}"
    )


def test_pinned_references_are_returned_without_asking() -> None:
    # Nothing listens on that port: a request would fail.
    reference = f"127.0.0.1:{free_port()}/app@sha256:{'0' * 64}"
    assert resolve_image(reference, insecure=True) == reference
    tagged = f"registry.example.com/team/app:1.2@sha256:{'a' * 64}"
    assert resolve_image(tagged, insecure=False) == tagged


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("busybox:1.36", "names no registry host"),
        ("127.0.0.1:5000/App:1", "invalid repository name"),
        ("127.0.0.1:5000/app:bad tag", "invalid tag"),
        ("127.0.0.1:5000/app@sha256:short", "invalid digest"),
    ],
)
def test_bad_references_are_refused_before_any_request(reference: str, words: str) -> None:
    with pytest.raises(PublishError, match=words):
        resolve_image(reference, insecure=True)


# --- what is checked before pushing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"repository": "Shop"}, "invalid repository name"),
        ({"tag": "-r1"}, "invalid tag"),
        ({"registry": "http://127.0.0.1:5000"}, "invalid registry"),
        ({"files": []}, "nothing to publish"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, change: dict[str, object], words: str) -> None:
    arguments: dict[str, object] = {
        "registry": "127.0.0.1:5000",
        "repository": "shop",
        "tag": "r1",
        "files": release_files(tmp_path),
        "annotations": {},
        "insecure": True,
        **change,
    }
    with pytest.raises(PublishError, match=words):
        publish_artifacts(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../escape.txt", "invalid artifact file name"),
        ("/etc/passwd", "invalid artifact file name"),
        ("", "invalid artifact file name"),
        (".", "invalid artifact file name"),
        ("dir\\file", "invalid artifact file name"),
    ],
)
def test_bad_file_names_are_refused(tmp_path: Path, name: str, words: str) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(PublishError, match=words):
        publish_artifacts(
            registry="127.0.0.1:5000",
            repository="shop",
            tag="r1",
            files=[(path, name)],
            annotations={},
            insecure=True,
        )


def test_missing_duplicate_and_folder_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")

    def publish(files: list[tuple[Path, str]]) -> None:
        publish_artifacts(
            registry="127.0.0.1:5000",
            repository="shop",
            tag="r1",
            files=files,
            annotations={},
            insecure=True,
        )

    with pytest.raises(PublishError, match="does not exist"):
        publish([(tmp_path / "missing", "missing")])
    with pytest.raises(PublishError, match="is not a regular file"):
        publish([(tmp_path, "folder")])
    with pytest.raises(PublishError, match="'dist/a' is given twice"):
        publish([(path, "dist/a"), (path, "./dist/a")])


@pytest.mark.integration
def test_one_file_under_two_names(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(os.urandom(1024))
    published = publish_artifacts(
        registry=registry.host,
        repository="shop-twice",
        tag="r1",
        files=[(path, "app.bin"), (path, "./backup//app.bin")],
        annotations={},
        insecure=True,
    )
    manifest = registry.manifest("shop-twice", published.digest).json()
    assert [layer["annotations"] for layer in manifest["layers"]] == [
        {"org.opencontainers.image.title": "app.bin"},
        {"org.opencontainers.image.title": "backup/app.bin"},
    ]
    assert (
        json.loads(registry.manifest("shop-twice", "r1").content)["layers"] == (manifest["layers"])
    )
