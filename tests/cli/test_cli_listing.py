"""Looking at runs after they happened: `runs`, `show`, `logs`, and the spec commands
`explain`, `schema`, `--help`, plus `run --sha` on an older commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pytest
from tests.conftest import Conveyor, GitRepo

ANSI = re.compile(r"\x1b[\[\]()#;?]*[0-9;]*[A-Za-z]?")
SPINNER = re.compile(r"[\u2800-\u28ff|/\\]\s*$")  # braille spinners, or a trailing |/-\
ARTIFACT = b"wheel bytes \x00\x01\x02 for alpha\n"

ALPHA = """\
service: alpha
jobs:
  build:
    steps:
      - name: compile
        run: |
          mkdir -p dist
          printf 'wheel bytes \\000\\001\\002 for alpha\\n' > dist/alpha.whl
          echo compiled
      - name: describe
        run: ls dist
    artifacts: [dist/*.whl]
  test:
    needs: [build]
    steps:
      - name: unit
        run: |
          echo "unit 1 ok"
          echo "unit 2 ok" >&2
          echo "unit 3 ok"
      - name: lint
        run: echo "lint ok"
"""

ALPHA_FAILING = ALPHA.replace('echo "lint ok"', 'echo "lint failed"; exit 3')

BETA = """\
service: beta
jobs:
  only:
    run: echo beta
"""


@dataclass(frozen=True)
class History:
    """Three finished runs: alpha succeeded, alpha failed, beta succeeded."""

    repo: GitRepo
    conveyor: Conveyor
    shas: list[str]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    base = tmp_path_factory.mktemp("history")
    repo = GitRepo(base / "repo")
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    conveyor = Conveyor(home=base / "home", cwd=repo.path)
    shas = []
    for message, pipeline, code in [
        ("alpha works", ALPHA, 0),
        ("alpha breaks lint", ALPHA_FAILING, 1),
        ("beta", BETA, 0),
    ]:
        shas.append(repo.commit(message, files={"conveyor.yml": pipeline}))
        result = conveyor("run")
        assert result.returncode == code, result.output
    return History(repo, conveyor, shas)


def test_runs_json_lists_every_run_newest_first(history: History) -> None:
    runs = history.conveyor("runs", "--json", check=True).json()

    assert [r["id"] for r in runs] == [3, 2, 1]
    assert [r["service"] for r in runs] == ["beta", "alpha", "alpha"]
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    assert [r["sha"] for r in runs] == history.shas[::-1]
    assert [r["subject"] for r in runs] == ["beta", "alpha breaks lint", "alpha works"]
    for run in runs:
        assert run["ref"] == "refs/heads/main"
        assert run["trigger"] == "manual"
        assert run["author"] == "Ada Author"
        assert isinstance(run["duration"], float)
        assert 0 <= run["duration"] < 60
        started = dt.datetime.fromisoformat(run["started_at"])
        finished = dt.datetime.fromisoformat(run["finished_at"])
        assert started.tzinfo is not None
        assert abs((finished - started).total_seconds() - run["duration"]) < 0.01
    assert runs[1]["reason"] == "job test failed"
    assert runs[0]["reason"] is None


def test_runs_filters(history: History) -> None:
    conveyor = history.conveyor

    def ids(*args: str) -> list[int]:
        return [r["id"] for r in conveyor("runs", "--json", *args, check=True).json()]

    assert ids("--service", "alpha") == [2, 1]
    assert ids("--status", "failed") == [2]
    assert ids("--status", "succeeded", "--service", "alpha") == [1]
    assert ids("-n", "2") == [3, 2]

    nothing = conveyor("runs", "--service", "nope", check=True)
    assert "no runs match" in nothing.stdout

    bad = conveyor("runs", "--status", "bogus")
    assert bad.returncode == 2
    assert "'bogus' is not one of" in bad.stderr


def test_runs_plain_output_has_no_terminal_codes(history: History) -> None:
    result = history.conveyor("runs", check=True)

    assert not ANSI.search(result.output), repr(result.output)
    assert "\r" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "run",
        "service",
        "status",
        "commit",
        "branch",
        "trigger",
        "started",
        "took",
    ]
    assert len(lines) == 4
    for line, (run_id, service, status, sha) in zip(
        lines[1:],
        [
            (3, "beta", "succeeded", history.shas[2]),
            (2, "alpha", "failed", history.shas[1]),
            (1, "alpha", "succeeded", history.shas[0]),
        ],
        strict=True,
    ):
        assert line.split()[0] == str(run_id)
        assert f" {service} " in line
        assert f" {status} " in line
        assert sha[:12] in line
        assert " main " in line
        assert not SPINNER.search(line)


def test_show_json_has_jobs_steps_and_artifact_digests(history: History) -> None:
    data = history.conveyor("show", "1", "--json", check=True).json()

    assert data["id"] == 1
    assert data["status"] == "succeeded"
    assert data["commit"]["sha"] == history.shas[0]
    jobs = {j["name"]: j for j in data["jobs"]}
    assert list(jobs) == ["build", "test"]
    assert jobs["test"]["needs"] == ["build"]
    assert [(s["name"], s["status"], s["exit_code"]) for s in jobs["build"]["steps"]] == [
        ("compile", "succeeded", 0),
        ("describe", "succeeded", 0),
    ]
    assert [s["name"] for s in jobs["test"]["steps"]] == ["unit", "lint"]

    [artifact] = data["artifacts"]
    assert artifact["job"] == "build"
    assert artifact["path"] == "dist/alpha.whl"
    assert artifact["size"] == len(ARTIFACT)
    assert artifact["digest"] == "sha256:" + hashlib.sha256(ARTIFACT).hexdigest()
    hexdigest = artifact["digest"].removeprefix("sha256:")
    stored = history.conveyor.home / "artifacts" / "sha256" / hexdigest[:2] / hexdigest[2:]
    assert stored.read_bytes() == ARTIFACT


def test_show_of_a_failed_run_names_the_failing_step(history: History) -> None:
    text = history.conveyor("show", "2", check=True).stdout
    data = history.conveyor("show", "2", "--json", check=True).json()

    assert text.startswith("run 2 · alpha · ✗ failed")
    assert "reason:  job test failed" in text
    assert "✗ lint failed" in text
    assert "exit 3" in text
    test = next(j for j in data["jobs"] if j["name"] == "test")
    assert test["reason"] == "step lint exited with 3"
    assert test["steps"][1]["exit_code"] == 3
    assert data["artifacts"][0]["digest"] == "sha256:" + hashlib.sha256(ARTIFACT).hexdigest()


def test_logs_of_one_job_are_exactly_its_lines_in_order(history: History) -> None:
    result = history.conveyor("logs", "1", "test", check=True)

    assert result.stdout.splitlines() == ["unit 1 ok", "unit 2 ok", "unit 3 ok", "lint ok"]
    assert result.stderr == ""


def test_logs_of_a_run_prefix_each_line_with_its_job(history: History) -> None:
    lines = history.conveyor("logs", "1", check=True).stdout.splitlines()

    assert lines[:2] == ["build | compiled", "build | alpha.whl"]
    assert lines[2].startswith("build | [conveyor] artifact dist/alpha.whl sha256:")
    assert lines[3:] == [
        "test  | unit 1 ok",
        "test  | unit 2 ok",
        "test  | unit 3 ok",
        "test  | lint ok",
    ]


def test_logs_with_timestamps(history: History) -> None:
    plain = history.conveyor("logs", "2", "test", check=True).stdout.splitlines()
    stamped = history.conveyor("logs", "2", "test", "--timestamps", check=True).stdout.splitlines()

    assert len(stamped) == len(plain) == 4
    assert plain[-1] == "lint failed"
    times = []
    for line, text in zip(stamped, plain, strict=True):
        stamp, _, rest = line.partition(" ")
        assert rest == text
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), stamp
        times.append(dt.datetime.fromisoformat(stamp))
    assert times == sorted(times)
    run = history.conveyor("show", "2", "--json", check=True).json()
    started = dt.datetime.fromisoformat(run["started_at"])
    finished = dt.datetime.fromisoformat(run["finished_at"])
    slack = dt.timedelta(milliseconds=1)
    assert started - slack <= times[0]
    assert times[-1] <= finished + slack


def test_explain_prints_stages_in_order(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write(
        "conveyor.yml",
        """\
        service: shop
        jobs:
          deploy-docs:
            needs: [package]
            run: echo docs
          package:
            needs: [test, lint]
            run: echo package
            artifacts: [dist/*.whl]
          test:
            run: echo test
          lint:
            run: echo lint
        """,
    )

    text = conveyor("explain", check=True).stdout

    assert "service: shop" in text
    assert "4 jobs in 3 stages" in text
    positions = [
        text.index(marker)
        for marker in (
            "stage 1:",
            "    lint: needs nothing",
            "    test: needs nothing",
            "stage 2:",
            "    package: needs test, lint",
            "stage 3:",
            "    deploy-docs: needs package",
        )
    ]
    assert positions == sorted(positions)
    assert "artifacts dist/*.whl" in text


def test_explain_of_an_invalid_file_fails_like_validate(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write("conveyor.yml", "service: shop\njobs:\n  a:\n    need: [b]\n    run: x\n")

    result = conveyor("explain")

    assert result.returncode == 1
    assert "did you mean 'needs'?" in result.stderr
    assert result.stdout == ""


def test_schema_is_json_schema_of_the_pipeline(conveyor: Conveyor) -> None:
    schema: dict[str, Any] = conveyor("schema", check=True).json()

    assert {"service", "jobs", "environments"} <= set(schema["properties"])
    assert "jobs" in schema.get("required", [])


def test_help_lists_every_command(conveyor: Conveyor) -> None:
    commands = [
        "demo",
        "init",
        "validate",
        "schema",
        "explain",
        "run",
        "runs",
        "show",
        "logs",
        "cancel",
        "rerun",
        "releases",
        "release",
        "db",
        "server",
        "edge",
        "token",
        "service",
        "secret",
        "runner",
        "hook",
        "envs",
        "deployments",
        "deployment",
        "promote",
        "rollback",
        "hold",
        "unhold",
        "approvals",
        "approve",
        "reject",
        "incidents",
        "audit",
        "user",
        "dora",
        "team",
        "incident",
        "import",
        "connectors",
        "watch",
    ]
    text = conveyor("--help", check=True).stdout
    section = text.split("Commands:", 1)[1]
    # A command's line starts two spaces in; a description too long for the terminal goes on
    # under its own column, further in.
    rows = [line for line in section.splitlines() if line.startswith("  ") and line[2] != " "]
    listed = [line.split()[0] for line in rows]

    assert sorted(listed) == sorted(commands)
    for line in rows:
        assert len(line.split()) > 1, f"command without a description: {line!r}"
    assert conveyor("-h", check=True).stdout == text


@pytest.mark.parametrize("command", ["run", "runs", "show", "logs", "init", "validate"])
def test_each_command_has_help(conveyor: Conveyor, command: str) -> None:
    result = conveyor(command, "--help", check=True)

    assert result.stdout.startswith(f"Usage: conveyor {command}")


def test_version(conveyor: Conveyor) -> None:
    result = conveyor("--version", check=True)

    assert re.fullmatch(r"conveyor, version \d+\.\d+\.\d+\S*\n", result.stdout)


def test_run_of_an_older_commit_uses_that_commits_files(repo: GitRepo, conveyor: Conveyor) -> None:
    old = repo.commit(
        "old",
        files={
            "conveyor.yml": "service: shop\njobs:\n  old-job:\n    run: cat data.txt\n",
            "data.txt": "old data\n",
        },
    )
    repo.commit(
        "new",
        files={
            "conveyor.yml": "service: shop\njobs:\n  new-job:\n    run: cat data.txt\n",
            "data.txt": "new data\n",
        },
    )
    # Uncommitted and untracked edits must not be seen either.
    repo.write("data.txt", "uncommitted data\n")
    repo.write("untracked.txt", "untracked\n")
    repo.write("conveyor.yml", "service: shop\njobs:\n  dirty-job:\n    run: ls; cat data.txt\n")

    result = conveyor("run", "--sha", old[:10])

    assert result.returncode == 0, result.output
    assert f"@ {old[:7]}" in result.stdout
    data = conveyor("show", "1", "--json", check=True).json()
    assert data["sha"] == old
    assert data["ref"] is None, "a bare sha names no branch"
    assert [j["name"] for j in data["jobs"]] == ["old-job"]
    assert conveyor("logs", "1", "old-job", check=True).stdout == "old data\n"

    head = conveyor("run", "--sha", "main")
    assert head.returncode == 0, head.output
    assert conveyor("logs", "2", "new-job", check=True).stdout == "new data\n"
    assert (repo.path / "data.txt").read_text(encoding="utf-8") == "uncommitted data\n"


@pytest.mark.parametrize(("rev", "ref"), [("main", "refs/heads/main"), ("v1.0", "refs/tags/v1.0")])
def test_run_of_a_branch_or_tag_records_its_ref(
    repo: GitRepo, conveyor: Conveyor, rev: str, ref: str
) -> None:
    repo.commit("tagged", files={"conveyor.yml": "service: shop\njobs:\n  a:\n    run: 'true'\n"})
    repo.git("tag", "v1.0")
    repo.git("checkout", "-q", "--detach")

    result = conveyor("run", "--sha", rev)

    assert result.returncode == 0, result.output
    [run] = conveyor("runs", "--json", check=True).json()
    assert run["ref"] == ref


@pytest.mark.parametrize(
    ("command", "first"),
    [(["token", "list"], "name"), (["user", "list"], "name"), (["service", "list"], "service")],
)
def test_an_empty_list_prints_its_headers_and_no_error(
    conveyor: Conveyor, command: list[str], first: str
) -> None:
    """A fresh store has nothing to list: the header line, not a traceback."""
    result = conveyor(*command)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.split()[0] == first
