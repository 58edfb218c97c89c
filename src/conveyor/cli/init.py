"""`conveyor init`: a commented starter conveyor.yml suited to the repository it finds."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import click

from conveyor.cli.common import repository_root
from conveyor.errors import ConveyorError

HEADER = """\
# Conveyor pipeline for {service}.
# Reference: `conveyor schema` prints the JSON Schema; `conveyor explain` shows the plan.
# Run it for the last commit with `conveyor run` (it reads this file from the commit,
# so commit it first).
service: {service}

on:
  push: {{ branches: [{branch}] }}

jobs:
"""

FOOTER = """
# Delivery: each successful run becomes a release that is promoted down this chain.
# Uncomment and adapt once your service has a start command and a health endpoint.
# environments:
#   staging:
#     deploy:
#       target: process
#       start: {start}
#     health:
#       http: {{ path: /healthz, expect: 200, within: 30s }}
#   production:
#     after: staging
#     approval: {{ approvers: [ops], required: 1 }}
#     deploy:
#       target: process
#       start: {start}
"""


_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./*-]*")


@dataclass(frozen=True)
class Starter:
    kind: str
    jobs: str
    start: str


def _python(root: Path) -> Starter:
    install = (
        "python -m pip install -e ."
        if _has(root, "pyproject.toml", "setup.py")
        else ("python -m pip install -r requirements.txt")
    )
    jobs = f"""\
  test:
    # Each job starts in a fresh copy of the commit; install what the tests need.
    steps:
      - name: install
        run: {install}
      - name: unit tests
        run: python -m pytest -q
  package:
    needs: [test]
    run: python -m pip wheel --no-deps --wheel-dir dist .
    artifacts: [dist/*.whl]     # stored by sha256; the release's payload
"""
    if not _has(root, "pyproject.toml", "setup.py"):
        jobs = jobs.split("  package:", maxsplit=1)[0]
    return Starter("Python", jobs, "python -m app --port $PORT")


def _node(root: Path) -> Starter:
    scripts: dict[str, object] = {}
    try:
        data = json.loads((root / "package.json").read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("scripts"), dict):
            scripts = data["scripts"]
    except (OSError, ValueError):
        pass
    install = "npm ci" if (root / "package-lock.json").exists() else "npm install"
    lines = [
        "  test:",
        "    steps:",
        "      - name: install",
        f"        run: {install}",
    ]
    if "lint" in scripts:
        lines += ["      - name: lint", "        run: npm run lint"]
    lines += ["      - name: unit tests", "        run: npm test"]
    if "build" in scripts:
        lines += [
            "  build:",
            "    needs: [test]",
            f"    run: {install} && npm run build",
            "    artifacts: [dist/**]",
        ]
    return Starter("Node.js", "\n".join(lines) + "\n", "node server.js")


def _go(root: Path) -> Starter:
    jobs = """\
  vet:
    run: go vet ./...
  test:
    run: go test ./...
  build:
    needs: [vet, test]
    run: go build -o bin/ ./...
    artifacts: [bin/*]
"""
    return Starter("Go", jobs, "./bin/app -port $PORT")


def _make(root: Path) -> Starter:
    text = (root / "Makefile").read_text(encoding="utf-8", errors="replace")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, flags=re.MULTILINE))
    jobs: list[str] = []
    previous: str | None = None
    for target in ("lint", "test", "build", "package", "dist"):
        if target in targets:
            jobs.append(f"  {target}:")
            if previous:
                jobs.append(f"    needs: [{previous}]")
            jobs.append(f"    run: make {target}")
            previous = target
    if not jobs:
        jobs = ["  build:", "    run: make"]
    return Starter("Makefile", "\n".join(jobs) + "\n", "make run PORT=$PORT")


def _generic(root: Path) -> Starter:
    jobs = """\
  build:
    run: |
      echo "replace this with your build, e.g. ./build.sh"
  test:
    needs: [build]
    run: |
      echo "replace this with your tests"
"""
    return Starter("generic", jobs, "./start.sh")


def _has(root: Path, *names: str) -> bool:
    return any((root / n).exists() for n in names)


def detect(root: Path) -> Starter:
    if _has(root, "pyproject.toml", "setup.py", "requirements.txt"):
        return _python(root)
    if _has(root, "package.json"):
        return _node(root)
    if _has(root, "go.mod"):
        return _go(root)
    if _has(root, "Makefile"):
        return _make(root)
    return _generic(root)


def service_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", root.name.lower()).strip("-._")
    return name or "my-service"


def _yaml_flow_scalar(value: str) -> str:
    """`main` as written; a name YAML would read as something else (`*`, `#x`, `[x]`, `true`,
    `1.10`) double-quoted. A JSON string is a valid YAML double-quoted scalar."""
    if _PLAIN_BRANCH.fullmatch(value):
        import yaml

        try:
            if yaml.safe_load(f"[{value}]") == [value]:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def render(root: Path, branch: str = "main") -> tuple[Starter, str]:
    starter = detect(root)
    text = HEADER.format(service=service_name(root), branch=_yaml_flow_scalar(branch))
    text += starter.jobs + FOOTER.format(start=starter.start)
    return starter, text


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing conveyor.yml.")
@click.option("--branch", default="main", show_default=True, help="Branch that triggers runs.")
def init(force: bool, branch: str) -> None:
    """Write a commented starter conveyor.yml for the repository here."""
    root = repository_root(Path.cwd()) or Path.cwd()
    target = root / "conveyor.yml"
    if target.exists() and not force:
        click.echo(f"{target} already exists; --force overwrites it", err=True)
        raise SystemExit(1)
    ignore = root / ".gitignore"
    try:
        starter, text = render(root, branch)
        # Read first: a .gitignore we cannot use must not leave a half-done init behind. Bytes,
        # so that a file in another encoding is kept exactly as it was.
        existing = ignore.read_bytes() if ignore.exists() else b""
        target.write_text(text, encoding="utf-8")
        if b".conveyor/" not in existing.splitlines():
            newline = b"" if existing.endswith(b"\n") or not existing else b"\n"
            ignore.write_bytes(existing + newline + b".conveyor/\n")
    except OSError as exc:
        where = exc.filename or target
        raise ConveyorError(
            f"cannot write the starter pipeline: {where}: {exc.strerror or exc}"
        ) from None
    click.echo(f"wrote {target} for a {starter.kind} project")
    click.echo("next: `conveyor validate`, commit it, then `conveyor run`")
