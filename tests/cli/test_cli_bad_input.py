"""What a new user meets when something is wrong: one clear message, a non-zero exit, no
traceback (the `conveyor` fixture checks that), and a store left consistent."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Conveyor, GitRepo, Result

PIPELINE_OK = """\
service: demo
jobs:
  build:
    run: echo building
"""


def runs_json(conveyor: Conveyor) -> list[dict[str, Any]]:
    result = conveyor("runs", "--json", check=True)
    runs: list[dict[str, Any]] = result.json()
    return runs


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def commit_pipeline(repo: GitRepo, text: str, message: str = "pipeline") -> str:
    repo.write("conveyor.yml", text)
    return repo.commit(message)


def processes_with(token: str) -> list[str]:
    """Command lines of live processes that contain `token` (left-behind step processes)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in text:
            found.append(text)
    return found


def unique_sleep() -> str:
    """A `sleep` argument no other process on the machine uses, to find leftovers by."""
    return f"1000.{uuid.uuid4().int % 10**9:09d}"


# --- the pipeline file ------------------------------------------------------------------------

YAML_SYNTAX_ERROR = """\
service: demo
jobs:
  build:
    run: echo hi
  test:
    run: echo: hi
"""


def test_yaml_syntax_error_on_run_names_file_line_and_column(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    sha = commit_pipeline(repo, YAML_SYNTAX_ERROR)

    result = conveyor("run")

    assert result.returncode == 1
    assert re.search(rf"conveyor\.yml@{sha[:7]}\w*:6:14: YAML syntax error", result.stderr), (
        result.output
    )
    assert len(error_lines(result)) == 1, result.output
    assert result.output.count("YAML syntax error") == 1
    assert runs_json(conveyor) == []


def test_yaml_syntax_error_on_validate_names_file_line_and_column(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    repo.write("conveyor.yml", YAML_SYNTAX_ERROR)

    result = conveyor("validate")

    assert result.returncode == 1
    assert f"{repo.path / 'conveyor.yml'}:6:14: YAML syntax error" in result.stderr
    assert result.stderr.strip().endswith("1 problem found")
    assert result.stdout == ""


NEED_TYPO = """\
service: demo
jobs:
  build:
    run: echo build
  test:
    need: [build]
    run: echo test
"""


@pytest.mark.parametrize("command", ["run", "validate"])
def test_typo_in_key_suggests_the_right_one(
    repo: GitRepo, conveyor: Conveyor, command: str
) -> None:
    commit_pipeline(repo, NEED_TYPO)

    result = conveyor(command)

    assert result.returncode == 1
    assert ":6:5: jobs.test: unknown key 'need' — did you mean 'needs'?" in result.stderr
    assert result.output.count("unknown key") == 1
    assert runs_json(conveyor) == []


CYCLE = """\
service: demo
jobs:
  a:
    needs: [c]
    run: echo a
  b:
    needs: [a]
    run: echo b
  c:
    needs: [b]
    run: echo c
  free:
    run: echo free
"""


@pytest.mark.parametrize("command", ["run", "validate"])
def test_cycle_in_needs_prints_the_cycle(repo: GitRepo, conveyor: Conveyor, command: str) -> None:
    commit_pipeline(repo, CYCLE)

    result = conveyor(command)

    assert result.returncode == 1
    match = re.search(r"dependency cycle: ([\w>\- ]+?)\s*$", result.stderr, re.MULTILINE)
    assert match, result.output
    names = match.group(1).split(" -> ")
    assert names[0] == names[-1], "a cycle ends where it starts"
    assert sorted(names[:-1]) == ["a", "b", "c"]
    assert "free" not in match.group(0)
    assert result.output.count("dependency cycle") == 1
    assert runs_json(conveyor) == []


def test_validate_of_a_missing_file(conveyor: Conveyor, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pipeline.yml"

    result = conveyor("validate", str(missing))

    assert result.returncode == 1
    assert f"{missing}: file not found" in result.stderr
    assert result.stdout == ""


def test_validate_without_a_file_in_the_repository(repo: GitRepo, conveyor: Conveyor) -> None:
    result = conveyor("validate")

    assert result.returncode == 1
    assert f"{repo.path / 'conveyor.yml'}: file not found" in result.stderr


# --- the repository and the commit ---------------------------------------------------------


def test_run_outside_a_git_repository(conveyor: Conveyor, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "conveyor.yml").write_text(PIPELINE_OK, encoding="utf-8")

    result = conveyor("run", cwd=plain)

    assert result.returncode == 1
    assert f"error: {plain} is not inside a git repository" in result.stderr
    assert "git init" in result.stderr
    assert len(error_lines(result)) == 1
    assert conveyor("runs", "--json", cwd=plain, check=True).json() == []


def test_run_in_a_repository_without_commits(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write("conveyor.yml", PIPELINE_OK)  # written, never committed

    result = conveyor("run")

    assert result.returncode == 1
    assert "has no commits yet" in result.stderr
    assert len(error_lines(result)) == 1
    assert runs_json(conveyor) == []


def test_run_of_a_commit_without_a_pipeline_file_points_to_init(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    sha = repo.commit("no pipeline yet", files={"README.md": "hello\n"})
    repo.write("conveyor.yml", PIPELINE_OK)  # only in the working tree: must not be used

    result = conveyor("run")

    assert result.returncode == 1
    assert f"error: commit {sha[:7]}" in result.stderr
    assert "has no conveyor.yml" in result.stderr
    assert "conveyor init" in result.stderr
    assert runs_json(conveyor) == []


@pytest.mark.parametrize(
    ("rev", "message"),
    [
        ("doesnotexist", "unknown revision 'doesnotexist'"),
        ("HEAD~5", "unknown revision 'HEAD~5'"),
        ("--upload-pack=touch pwned", "invalid revision"),
        ("HEAD^{tree}", "is not a commit"),
    ],
)
def test_run_of_an_unknown_commit(
    repo: GitRepo, conveyor: Conveyor, rev: str, message: str
) -> None:
    commit_pipeline(repo, PIPELINE_OK)

    result = conveyor("run", "--sha", rev)

    assert result.returncode == 1
    assert message in result.stderr
    assert len(error_lines(result)) == 1
    assert not (repo.path / "pwned").exists()
    assert runs_json(conveyor) == []


def test_malformed_secrets_file_is_refused_by_import_and_stores_nothing(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    commit_pipeline(repo, PIPELINE_OK)
    conveyor.home.mkdir(parents=True, exist_ok=True)
    old = conveyor.home / "secrets.env"
    old.write_text("GOOD=value\nthis is not NAME=value\n", encoding="utf-8")

    result = conveyor("secret", "import", "shop", str(old))

    assert result.returncode == 1
    assert "secrets.env:2: expected NAME=value" in result.stderr
    assert conveyor("secret", "list", "shop", "--json", check=True).json() == []
    # The old file is no longer read by a run: named, not fatal.
    run = conveyor("run", check=True)
    assert "is no longer read" in run.stderr


# --- what steps do -------------------------------------------------------------------------


def test_step_running_a_missing_command(repo: GitRepo, conveyor: Conveyor) -> None:
    commit_pipeline(
        repo,
        """\
        service: demo
        jobs:
          build:
            steps:
              - name: hello
                run: echo hello
              - name: compile
                run: no-such-compiler-xyz --all
              - name: after
                run: echo never
        """,
    )

    result = conveyor("run")

    assert result.returncode == 1
    assert "command not found" in result.output
    assert "no-such-compiler-xyz" in result.stderr, "the failed job's log tail is shown"
    assert "conveyor logs 1 build" in result.stderr

    [run] = runs_json(conveyor)
    assert run["status"] == "failed"
    assert run["reason"] == "job build failed"

    shown = conveyor("show", "1", check=True)
    assert "✗ compile failed" in shown.stdout
    assert "exit 127" in shown.stdout
    assert "command not found" in shown.stdout
    assert "after skipped" in shown.stdout

    [job] = conveyor("show", "1", "--json", check=True).json()["jobs"]
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("hello", "succeeded"),
        ("compile", "failed"),
        ("after", "skipped"),
    ]
    assert job["steps"][1]["exit_code"] == 127
    assert "never" not in conveyor("logs", "1", check=True).stdout


def test_step_writing_binary_data_completes_and_logs_print(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    commit_pipeline(
        repo,
        r"""
        service: demo
        jobs:
          noise:
            steps:
              - run: head -c 3000 /dev/urandom
              - run: printf '\xff\xfe\n'
              - run: printf 'nul\000bel\007end\r\n'
              - run: echo done
        """,
    )

    result = conveyor("run")

    assert result.returncode == 0, result.output
    assert runs_json(conveyor)[0]["status"] == "succeeded"
    logs = conveyor("logs", "1")
    assert logs.returncode == 0
    lines = logs.stdout.splitlines()
    assert lines[-1] == "done"
    assert lines[-2] == "nul\ufffdbel\ufffdend"
    assert lines[-3] == "\ufffd\ufffd"
    assert conveyor("logs", "1", "noise", "--timestamps").returncode == 0
    assert conveyor("show", "1", "--json").returncode == 0


def test_step_timeout_stops_it_in_bounded_time(repo: GitRepo, conveyor: Conveyor) -> None:
    marker = unique_sleep()
    commit_pipeline(
        repo,
        f"""\
        service: demo
        jobs:
          hang:
            steps:
              - name: forever
                run: sleep {marker}
                timeout: 1s
        """,
    )

    started = time.monotonic()
    result = conveyor("run", timeout=30)
    took = time.monotonic() - started

    assert result.returncode == 1
    assert "timed out after 1s" in result.stdout
    assert took < 15, f"a 1s timeout took {took:.1f}s"
    assert processes_with(marker) == []
    [run] = runs_json(conveyor)
    assert run["status"] == "failed"
    [job] = conveyor("show", "1", "--json", check=True).json()["jobs"]
    assert job["status"] == "failed"
    assert job["steps"][0]["reason"] == "timed out after 1s"


def test_job_timeout_reports_the_configured_limit(repo: GitRepo, conveyor: Conveyor) -> None:
    commit_pipeline(
        repo,
        """\
        service: demo
        jobs:
          hang:
            timeout: 1s
            run: sleep 1000
        """,
    )

    result = conveyor("run", timeout=30)

    assert result.returncode == 1
    [job] = conveyor("show", "1", "--json", check=True).json()["jobs"]
    # Not "timed out after 0.995998s": the user wrote 1s.
    assert job["steps"][0]["reason"] == "timed out after 1s", result.output


# --- naming runs and jobs that do not exist ------------------------------------------------


@pytest.mark.parametrize("command", ["show", "logs", "cancel"])
@pytest.mark.parametrize("run_id", ["42", "99999999999999999999"])
def test_unknown_run_id(conveyor: Conveyor, command: str, run_id: str) -> None:
    result = conveyor(command, run_id)

    assert result.returncode == 1
    assert error_lines(result) == [f"error: there is no run {run_id}"]
    assert "conveyor runs" in result.stderr
    assert result.stdout == ""


def test_logs_of_an_unknown_job_lists_the_jobs(repo: GitRepo, conveyor: Conveyor) -> None:
    commit_pipeline(
        repo,
        """\
        service: demo
        jobs:
          build:
            run: echo build
          test:
            needs: [build]
            run: echo test
        """,
    )
    conveyor("run", check=True)

    result = conveyor("logs", "1", "nosuchjob")

    assert result.returncode == 1
    assert error_lines(result) == ["error: run 1 has no job 'nosuchjob'"]
    assert "its jobs: build, test" in result.stderr
    assert result.stdout == ""


def test_cancel_of_a_finished_run(repo: GitRepo, conveyor: Conveyor) -> None:
    commit_pipeline(repo, PIPELINE_OK)
    conveyor("run", check=True)

    result = conveyor("cancel", "1")

    assert result.returncode == 1
    assert error_lines(result) == ["error: run 1 has already succeeded"]
    assert runs_json(conveyor)[0]["status"] == "succeeded"


# --- stopping a run ------------------------------------------------------------------------

SLOW = """\
service: demo
jobs:
  slow:
    run: echo begin; sleep {marker}
  later:
    needs: [slow]
    run: echo never
"""


def _start_slow_run(repo: GitRepo, conveyor: Conveyor, marker: str) -> subprocess.Popen[str]:
    commit_pipeline(repo, SLOW.format(marker=marker))
    proc = conveyor.popen("run")
    assert proc.stdout is not None
    for line in proc.stdout:  # the plain view says when the job has started
        if "slow started" in line:
            return proc
    proc.kill()
    pytest.fail(f"the run never started its job: {proc.communicate()}")


def _check_cancelled(conveyor: Conveyor, proc: subprocess.Popen[str], marker: str) -> str:
    _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 130, stderr
    [run] = runs_json(conveyor)
    assert run["status"] == "cancelled"
    assert run["reason"] == "cancelled by request"
    jobs = {j["name"]: j for j in conveyor("show", "1", "--json", check=True).json()["jobs"]}
    assert jobs["slow"]["status"] == "cancelled"
    assert jobs["later"]["status"] == "cancelled"
    assert processes_with(marker) == []
    return stderr


def test_cancel_from_another_terminal(repo: GitRepo, conveyor: Conveyor) -> None:
    marker = unique_sleep()
    proc = _start_slow_run(repo, conveyor, marker)
    try:
        result = conveyor("cancel", "1")
        assert result.returncode == 0, result.output
        assert "cancel requested for run 1 (it was running)" in result.stdout
    finally:
        _check_cancelled(conveyor, proc, marker)


def test_ctrl_c_cancels_the_run(repo: GitRepo, conveyor: Conveyor) -> None:
    marker = unique_sleep()
    proc = _start_slow_run(repo, conveyor, marker)
    proc.send_signal(signal.SIGINT)
    _check_cancelled(conveyor, proc, marker)


def test_missing_secret_fails_the_job_and_names_the_secret(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    commit_pipeline(
        repo,
        """\
        service: demo
        jobs:
          publish:
            env:
              TOKEN: ${{ secrets.PUBLISH_TOKEN }}
            run: echo "token is $TOKEN"
        """,
    )

    result = conveyor("run")

    assert result.returncode == 1
    assert "secret PUBLISH_TOKEN is not set" in result.output
    [run] = runs_json(conveyor)
    assert run["status"] == "failed"
    assert "token is" not in conveyor("logs", "1", check=True).stdout

    # The runner's environment is no source of secrets: only the service's own secrets are.
    conveyor.extra_env["PUBLISH_TOKEN"] = "hunter2-from-the-environment"
    assert "secret PUBLISH_TOKEN is not set" in conveyor("run").output
    value = conveyor.cwd.parent / "publish-token"
    value.write_text("hunter2-very-secret")
    conveyor("secret", "set", "demo", "PUBLISH_TOKEN", "--value-file", str(value), check=True)
    again = conveyor("run")
    assert again.returncode == 0, again.output
    assert conveyor("logs", "3", check=True).stdout == "token is ***\n"


# --- the data directory ----------------------------------------------------------------------


def test_data_directory_that_is_a_file(conveyor: Conveyor, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "home-file"
    not_a_dir.write_text("I am a file\n", encoding="utf-8")
    conveyor.extra_env["CONVEYOR_HOME"] = str(not_a_dir)

    result = conveyor("runs")

    assert result.returncode == 1
    assert len(error_lines(result)) == 1
    assert str(not_a_dir) in result.stderr


def test_database_file_that_is_not_a_database(conveyor: Conveyor) -> None:
    conveyor.home.mkdir(parents=True)
    (conveyor.home / "conveyor.db").write_bytes(b"this is not an SQLite database\n" * 10)

    result = conveyor("runs")

    assert result.returncode == 1
    assert len(error_lines(result)) == 1
    assert "cannot open the database" in result.stderr


@pytest.mark.parametrize("url", ["bogus://db", "not a url"])
def test_database_url_that_is_not_usable(conveyor: Conveyor, url: str) -> None:
    conveyor.extra_env["CONVEYOR_DATABASE_URL"] = url

    result = conveyor("runs")

    assert result.returncode == 1
    assert len(error_lines(result)) == 1
    assert "CONVEYOR_DATABASE_URL" in result.stderr or url in result.stderr
