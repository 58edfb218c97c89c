"""The README and docs/ hold together: every relative link leads to a file that exists (and to a
heading that exists, when it names one), and every pipeline example in the README is accepted
by `conveyor validate`, the command a newcomer would run on it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tests.serverproc import clean_env, conveyor_argv

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without code: a link-like string inside code is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than `-` and `_`
    dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def _links(page: Path) -> list[str]:
    found = LINK.findall(_prose(page.read_text(encoding="utf-8")))
    return [t for t in found if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_the_docs_a_newcomer_needs() -> None:
    targets = {t.partition("#")[0] for t in _links(README)}
    for doc in (
        "docs/concepts.md",
        "docs/metrics.md",
        "docs/pipeline-reference.md",
        "docs/operations.md",
        "docs/architecture.md",
        "docs/comparison.md",
        "docs/web.md",
        "bench/README.md",
    ):
        assert doc in targets, f"the README does not link {doc}"


def _pipeline_examples() -> list[str]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    return [b for b in blocks if b.startswith("service:")]


def test_the_readme_has_pipeline_examples() -> None:
    assert len(_pipeline_examples()) >= 2


@pytest.mark.parametrize("number", range(len(_pipeline_examples())))
def test_each_readme_pipeline_example_validates(number: int, tmp_path: Path) -> None:
    (tmp_path / "conveyor.yml").write_text(_pipeline_examples()[number], encoding="utf-8")
    done = subprocess.run(
        conveyor_argv("validate", "conveyor.yml"),
        cwd=tmp_path,
        env=clean_env(CONVEYOR_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout
