"""`conveyor init`: a starter conveyor.yml that fits the repository, is valid as written, and is
never written over a file the user already has."""

from __future__ import annotations

import json

import pytest
from tests.conftest import Conveyor, GitRepo

PROJECTS: dict[str, tuple[dict[str, str], str, list[str]]] = {
    # name: (files in the repository, kind reported, commands the pipeline must run)
    "python": (
        {"pyproject.toml": '[project]\nname = "shop"\nversion = "1.0"\n'},
        "Python",
        ["python -m pip install -e .", "python -m pytest -q", "python -m pip wheel"],
    ),
    "python-requirements": (
        {"requirements.txt": "requests\n"},
        "Python",
        ["python -m pip install -r requirements.txt", "python -m pytest -q"],
    ),
    "node": (
        {"package.json": json.dumps({"name": "shop", "scripts": {"test": "jest", "build": "tsc"}})},
        "Node.js",
        ["npm install", "npm test", "npm run build"],
    ),
    "node-lockfile": (
        {"package.json": json.dumps({"scripts": {"test": "jest"}}), "package-lock.json": "{}"},
        "Node.js",
        ["npm ci", "npm test"],
    ),
    "go": (
        {"go.mod": "module example.com/shop\n\ngo 1.22\n"},
        "Go",
        ["go vet ./...", "go test ./...", "go build"],
    ),
    "make": (
        {"Makefile": "test:\n\techo ok\n\nbuild: test\n\techo build\n"},
        "Makefile",
        ["make test", "make build"],
    ),
    "empty": ({}, "generic", ["replace this with your build"]),
}


def pipeline_commands(text: str) -> list[str]:
    """The `run:` values of the uncommented part of a pipeline file."""
    return [
        line.split("run:", 1)[1].split("#", 1)[0].strip()
        for line in text.splitlines()
        if "run:" in line and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("project", list(PROJECTS))
def test_init_writes_a_valid_pipeline_for_the_project(
    repo: GitRepo, conveyor: Conveyor, project: str
) -> None:
    files, kind, commands = PROJECTS[project]
    for name, content in files.items():
        repo.write(name, content)

    result = conveyor("init", check=True)

    target = repo.path / "conveyor.yml"
    assert f"wrote {target} for a {kind} project" in result.stdout
    assert "conveyor validate" in result.stdout
    text = target.read_text(encoding="utf-8")
    for command in commands:
        assert command in text, f"{command!r} missing from:\n{text}"
    if project != "make":
        assert "make test" not in text
    assert ".conveyor/" in (repo.path / ".gitignore").read_text(encoding="utf-8").splitlines()

    validated = conveyor("validate")
    assert validated.returncode == 0, validated.output
    assert validated.stdout.startswith("conveyor.yml is valid: service repo,")


def test_init_pipeline_lists_jobs_in_a_sensible_order(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write("Makefile", "lint:\n\techo lint\ntest:\n\techo ok\nbuild:\n\techo build\n")
    conveyor("init", check=True)

    explained = conveyor("explain", check=True).stdout

    assert explained.index("lint:") < explained.index("test:") < explained.index("build:")
    assert "3 jobs in 3 stages" in explained


def test_init_refuses_to_overwrite_without_force(repo: GitRepo, conveyor: Conveyor) -> None:
    mine = "service: mine\njobs:\n  only:\n    run: echo mine\n"
    repo.write("conveyor.yml", mine)

    refused = conveyor("init")

    assert refused.returncode == 1
    assert "already exists" in refused.stderr
    assert "--force" in refused.stderr
    assert (repo.path / "conveyor.yml").read_text(encoding="utf-8") == mine
    assert not (repo.path / ".gitignore").exists(), "a refused init changes nothing"

    forced = conveyor("init", "--force", check=True)
    assert "wrote" in forced.stdout
    assert "service: repo" in (repo.path / "conveyor.yml").read_text(encoding="utf-8")
    assert conveyor("validate").returncode == 0


def test_init_twice_keeps_one_gitignore_entry(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write(".gitignore", "node_modules/")  # no final newline
    conveyor("init", check=True)
    conveyor("init", "--force", check=True)

    lines = (repo.path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines == ["node_modules/", ".conveyor/"]


def test_init_from_a_subdirectory_writes_at_the_top(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write("go.mod", "module example.com/shop\n")
    sub = repo.path / "cmd" / "shop"
    sub.mkdir(parents=True)

    conveyor("init", cwd=sub, check=True)

    assert (repo.path / "conveyor.yml").exists()
    assert not (sub / "conveyor.yml").exists()
    assert conveyor("validate", cwd=sub).returncode == 0


@pytest.mark.parametrize("branch", ["release/*", "*", "#1-fix", "1.10", "a: b"])
def test_init_branch_option_gives_a_valid_trigger(
    repo: GitRepo, conveyor: Conveyor, branch: str
) -> None:
    conveyor("init", "--branch", branch, check=True)

    explained = conveyor("explain")  # fails, like validate, on an invalid file

    assert explained.returncode == 0, explained.output
    assert f"triggers: push to {branch}\n" in explained.stdout


def test_init_then_run_in_a_makefile_repository(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write("Makefile", "test:\n\techo ok\n")
    conveyor("init", check=True)
    assert pipeline_commands((repo.path / "conveyor.yml").read_text(encoding="utf-8")) == [
        "make test"
    ]
    repo.commit("add conveyor pipeline")

    result = conveyor("run")

    assert result.returncode == 0, result.output
    assert "run 1 succeeded" in result.stdout
    [run] = conveyor("runs", "--json", check=True).json()
    assert run["status"] == "succeeded"
    assert run["service"] == "repo"
    logs = conveyor("logs", "1", "test", check=True).stdout.splitlines()
    assert logs == ["echo ok", "ok"]
    assert repo.git("status", "--porcelain") == "", "the run left nothing in the working tree"


def test_init_that_cannot_write_says_why_and_writes_nothing(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    (repo.path / ".gitignore").mkdir()  # odd, but a new user's repository may hold anything

    result = conveyor("init")

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot write the starter pipeline: ")
    assert ".gitignore: Is a directory" in result.stderr
    assert not (repo.path / "conveyor.yml").exists()


def test_init_keeps_a_gitignore_in_another_encoding(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write(".gitignore", "caf\xe9.log\n".encode("latin-1"))

    conveyor("init", check=True)

    assert (repo.path / ".gitignore").read_bytes() == b"caf\xe9.log\n.conveyor/\n"
