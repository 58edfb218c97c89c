"""The forges as a kind of extension: each built-in comes from its own module of
conveyor.forges, and callers reach them by name only."""

from __future__ import annotations

import pytest

from conveyor import extensions
from conveyor.extensions import Kind, Options, registry
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
