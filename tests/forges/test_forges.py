"""The forges as a kind of extension: each built-in comes from its own module of
conveyor.forges, and callers reach them by name only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conveyor import extensions, forges
from conveyor.extensions import Extension, ExtensionError, Kind, Options, registry
from conveyor.forges import Forge, WebhookRejected, known, links, names, verify_and_parse
from tests.forges.contract import SECRET, fixture


def test_each_builtin_forge_is_registered_from_its_own_module() -> None:
    found = extensions.load(plugins=False).of(Kind.FORGE)
    assert {name: e.origin for name, e in found.items()} == {
        "gitea": "conveyor.forges.gitea",
        "github": "conveyor.forges.github",
        "gitlab": "conveyor.forges.gitlab",
    }
    for name, extension in found.items():
        assert isinstance(extension.implementation, Forge)
        assert extension.implementation.name == name
        assert issubclass(extension.options, Options)
        assert extension.options.model_fields == {}  # nothing to configure, yet
        assert extension.description


def test_callers_see_the_registered_forges() -> None:
    assert set(names()) >= {"github", "gitlab", "gitea"}
    assert names() == registry().names(Kind.FORGE)
    assert known("github")
    assert not known("bitbucket")
    assert not known("base")  # a module of the package that declares no forge


@pytest.mark.parametrize("forge", ["bitbucket", "base", ""])
def test_unknown_forge_is_not_found(forge: str) -> None:
    body = fixture("github", "push")
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse(forge, {}, body, secret=SECRET)
    assert (info.value.status, info.value.message) == (404, "unknown forge")


def test_an_unknown_forge_is_refused_before_its_size() -> None:
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse("bitbucket", {}, b"x" * 101, secret=SECRET, max_bytes=100)
    assert info.value.status == 404


@pytest.mark.parametrize(
    "repository",
    [
        "https://git.internal/team/shop.git",  # unknown host, no forge named
        "/srv/git/shop",
        "https://github.com/shop",  # no owner
        "https://github.com/acme/../shop",
    ],
)
def test_no_links_where_a_link_could_be_wrong(repository: str) -> None:
    assert links(repository, None, "abc", "def") is None
    assert links("/srv/git/shop", "github", "abc") is None


def test_no_compare_link_without_a_different_base() -> None:
    assert links("https://github.com/acme/shop", None, "abc") == {
        "forge": "github",
        "commit": "https://github.com/acme/shop/commit/abc",
    }
    assert "compare" not in (links("https://github.com/acme/shop", None, "abc", "abc") or {})


class Example(Forge):
    """A forge as a plugin would add one: a token header, its own event names."""

    name = "example"
    event_label = "X-Example-Event"
    event_headers = ("x-example-event",)
    delivery_headers = ("x-example-delivery",)
    signature_headers = ("x-example-token",)
    push_events = frozenset({"push"})

    def signature(self, secret: str, body: bytes) -> str:
        return secret

    def repository(self, data: Mapping[str, Any]) -> str:
        return str(data["repository"]["full_name"])

    def pusher(self, data: Mapping[str, Any]) -> str | None:
        return None


class ExampleOptions(Options):
    """Nothing to configure."""


@pytest.fixture
def with_example(monkeypatch: pytest.MonkeyPatch) -> extensions.Registry:
    loaded = extensions.load(plugins=False)
    loaded.add(
        Extension(kind=Kind.FORGE, name="example", options=ExampleOptions, implementation=Example())
    )
    monkeypatch.setattr(forges, "registry", lambda: loaded)
    return loaded


@pytest.mark.usefixtures("with_example")
def test_a_registered_forge_is_reached_by_its_name_alone() -> None:
    body = fixture("github", "push")
    h = {"X-Example-Event": "push", "X-Example-Delivery": "d-1", "X-Example-Token": SECRET}
    push = verify_and_parse("example", h, body, secret=SECRET)
    assert push is not None
    assert (push.forge, push.delivery_id, push.repository) == (
        "example",
        "d-1",
        "Codertocat/Hello-World",
    )
    assert known("example")
    with pytest.raises(WebhookRejected, match="missing signature"):
        forges.refuse_before_body("example", {}, secret=SECRET, allow_unsigned=False)
    assert (links("https://example.org/a/b", "example", "abc") or {}).get("commit") == (
        "https://example.org/a/b/commit/abc"
    )


def test_an_implementation_that_is_not_a_forge_is_a_broken_extension(
    with_example: extensions.Registry,
) -> None:
    with_example.add(
        Extension(kind=Kind.FORGE, name="broken", options=ExampleOptions, implementation=object())
    )
    with pytest.raises(ExtensionError, match=r"not a conveyor\.forges\.Forge"):
        verify_and_parse("broken", {}, b"{}", secret=SECRET)
