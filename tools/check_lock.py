"""Check that requirements/lock.txt and pyproject.toml agree, and that the venv is the lock.

Run by `make setup` (right after installing the lock) and by `make lint`, so CI fails when
someone edits the dependencies in pyproject.toml without `make relock`, or the lock by hand.
It needs no network: everything is read from the two files and the installed metadata.

Three rules:

1. every requirement of pyproject.toml (runtime, every extra, the build backend) is pinned in
   the lock, at a version its range allows;
2. every package of the lock is needed: reachable from those requirements through the
   installed packages' own requirements (a package dropped from pyproject.toml leaves the lock);
3. the environment holds exactly the lock (nothing more, nothing at another version).

Exit 0 when all hold; otherwise one line per problem and what to run, and exit 1.
With ``--drift`` (used by `make test-latest`) it only lists where the environment differs
from the lock, and exits 0: the versions a newer install would bring.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
BUILD_IN = ROOT / "requirements" / "build.in"
PYPROJECT = ROOT / "pyproject.toml"
# Installed by the venv itself, not by the lock.
NOT_LOCKED = {canonicalize_name(name) for name in ("pip", "conveyor")}


def locked_pins(text: str) -> dict[NormalizedName, tuple[Version, Marker | None]]:
    """``name==version [; marker]`` lines of a hashed lock (continuations and comments skipped)."""
    pins: dict[NormalizedName, tuple[Version, Marker | None]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "--")):
            continue
        requirement = Requirement(line.rstrip("\\").strip())
        (spec,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = (Version(spec.version), requirement.marker)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())
    lines: list[str] = list(project["project"]["dependencies"])
    for extra in project["project"].get("optional-dependencies", {}).values():
        lines.extend(extra)
    lines.extend(project["build-system"]["requires"])
    lines.extend(
        line.strip()
        for line in BUILD_IN.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return [Requirement(line) for line in lines]


def applies(marker: Marker | None, extras: Iterable[str] = ()) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in (*extras, ""))


def requirements_of(name: NormalizedName, extras: frozenset[str]) -> Iterator[Requirement]:
    for line in metadata.distribution(name).requires or []:
        requirement = Requirement(line)
        if applies(requirement.marker, extras):
            yield requirement


def needed(roots: list[Requirement]) -> set[NormalizedName]:
    """Every installed package the roots pull in, following each package's own requirements."""
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    stack = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots if applies(r.marker)]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        name, extras = key
        try:
            children = list(requirements_of(name, extras))
        except metadata.PackageNotFoundError:
            continue  # reported by the installed-versus-lock rule
        stack.extend((canonicalize_name(c.name), frozenset(c.extras)) for c in children)
    return {name for name, _ in seen}


def problems() -> list[str]:
    pins = locked_pins(LOCK.read_text())
    found: list[str] = []
    roots = project_requirements()
    for requirement in roots:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{requirement} is asked for by pyproject.toml but not in the lock")
            continue
        version, _ = pins[name]
        if not requirement.specifier.contains(version, prereleases=True):
            found.append(f"pyproject.toml asks for {requirement}, the lock has {name}=={version}")

    installed = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version)
        for dist in metadata.distributions()
    }
    here = {name for name, (_, marker) in pins.items() if applies(marker)}
    for name in sorted(here - needed(roots)):
        found.append(f"{name} is in the lock but nothing in pyproject.toml needs it")
    for name in sorted(here):
        version, _ = pins[name]
        if name not in installed:
            found.append(f"{name}=={version} is locked but not installed")
        elif installed[name] != version:
            found.append(f"{name} is installed at {installed[name]}, the lock has {version}")
    for name in sorted(set(installed) - set(pins) - NOT_LOCKED):
        found.append(f"{name}=={installed[name]} is installed but not in the lock")
    return found


def drift() -> list[str]:
    pins = locked_pins(LOCK.read_text())
    lines = []
    for dist in sorted(metadata.distributions(), key=lambda d: canonicalize_name(d.name)):
        name = canonicalize_name(dist.metadata["Name"])
        locked = pins.get(name)
        if name in NOT_LOCKED or (locked is not None and locked[0] == Version(dist.version)):
            continue
        was = f"locked {locked[0]}" if locked else "not in the lock"
        lines.append(f"{name} {dist.version} ({was})")
    return lines


def main() -> int:
    if sys.argv[1:] == ["--drift"]:
        lines = drift()
        print(f"{len(lines)} packages differ from {LOCK.relative_to(ROOT)}:", *lines, sep="\n  ")
        return 0
    found = problems()
    if not found:
        print(f"{LOCK.relative_to(ROOT)} agrees with pyproject.toml and the environment")
        return 0
    for problem in found:
        print(f"lock: {problem}", file=sys.stderr)
    print(
        "The lock is what is tested: after editing pyproject.toml run `make relock` "
        "(keeps every other pin), then `make setup`.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
