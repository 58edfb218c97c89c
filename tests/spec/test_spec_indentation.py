"""An indentation mistake that YAML accepts: a key written inside a `run: |` block becomes a
line of the script. It is reported where it was written; shell lines with colons are not."""

import textwrap

import pytest
from tests.conftest import Conveyor, GitRepo

from conveyor.spec import PipelineError, parse_pipeline

OVER_INDENTED_ARTIFACTS = """\
service: shop
jobs:
  build:
    run: |
      python -m build
      artifacts:
        - dist/*
  test:
    needs: [build]
    run: pytest -q
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(textwrap.dedent(text).lstrip("\n"))
    return [str(p) for p in info.value.problems]


def test_a_job_key_inside_the_run_block_is_reported_at_its_line() -> None:
    assert problems(OVER_INDENTED_ARTIFACTS) == [
        "conveyor.yml:6:7: jobs.build.run: `artifacts:` is inside the `run: |` block of job "
        "build (indented like the script), so it is run as a line of the script — if it is a "
        "key of job build, indent it like `run:`"
    ]


def test_a_key_indented_deeper_than_the_script_is_reported_once_with_its_value() -> None:
    found = problems("""
        service: shop
        jobs:
          build:
            run: >
              make
                timeout: 10m
                  retries: 2
    """)
    assert found == [
        "conveyor.yml:6:9: jobs.build.run: `timeout:` is inside the `run: >` block of job build "
        "(indented deeper than the script), so it is run as a line of the script — if it is a "
        "key of job build, indent it like `run:`"
    ]


def test_a_job_key_inside_a_steps_run_block_names_the_step_and_the_job() -> None:
    found = problems("""
        service: shop
        jobs:
          build:
            steps:
              - name: compile
                run: |
                  make
                  - run: make check
                timeout: 5m
              - run: |
                  make install
                  artifacts: [out/*]
    """)
    assert found == [
        "conveyor.yml:8:11: jobs.build.steps[0].run: `- run:` is inside the `run: |` block of "
        "step 1 of job build (indented like the script), so it is run as a line of the script "
        "— if it starts another entry of `steps:`, indent its `-` like this entry's",
        "conveyor.yml:12:11: jobs.build.steps[1].run: `artifacts:` is inside the `run: |` block "
        "of step 2 of job build (indented like the script), so it is run as a line of the "
        "script — if it is a key of job build, indent it like `steps:`",
    ]


def test_an_environment_key_inside_the_start_command_names_the_environment() -> None:
    found = problems("""
        service: shop
        jobs: {build: {run: make}}
        environments:
          production:
            deploy:
              start: |
                gunicorn shop:app
                health:
                  http: {path: /healthz}
    """)
    assert found == [
        "conveyor.yml:8:9: environments.production.deploy.start: `health:` is inside the "
        "`start: |` block of the deploy of environment production (indented like the script), "
        "so it is run as a line of the script — if it is a key of environment production, "
        "indent it like `deploy:`"
    ]


def test_a_block_merged_from_an_anchor_is_judged_where_it_is_used() -> None:
    found = problems("""
        service: shop
        x-build: &build
          run: |
            make
            needs: [lint]
        jobs:
          lint: {run: ruff check .}
          build:
            <<: *build
    """)
    assert found == [
        "conveyor.yml:5:5: jobs.build.run: `needs:` is inside the `run: |` block of job build "
        "(indented like the script), so it is run as a line of the script — if it is a key of "
        "job build, indent it like `run:`"
    ]


def test_shell_lines_with_colons_are_scripts_not_keys() -> None:
    """Every line here is ordinary shell; the YAML in the heredoc and the quoted string is
    content the script writes, and `env:` values are free text."""
    pipeline = parse_pipeline(
        textwrap.dedent("""\
        service: shop
        jobs:
          build:
            env:
              CONFIG: |
                timeout: 5
            run: |
              echo needs: none
              echo "timeout: 5" > settings.txt
              case "$MODE" in
                release) echo retries: 3 ;;
                *) true ;;
              esac
              cat > deploy.yml <<EOF
              artifacts:
                - dist/*
              EOF
              cat > more.yml <<-'END'
                needs: [x]
              END
              printf '%s\\n' '
              steps:
                - x
              '
              python3 -c "
              import sys
              " \\
                --flag
              # artifacts: commented out on purpose
              url=http://example.com:8080/path
              https://example.com: is not a key either
        """)
    )
    script = pipeline.jobs["build"].run or ""
    assert "artifacts:\n  - dist/*" in script
    assert pipeline.jobs["build"].artifacts == []


def test_keys_unknown_to_the_surrounding_mappings_are_left_to_the_script() -> None:
    pipeline = parse_pipeline(
        "service: shop\njobs:\n  build:\n    run: |\n      make\n      artifact_dir: x\n"
    )
    assert "artifact_dir: x" in (pipeline.jobs["build"].run or "")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_conveyor_refuses_the_over_indented_key_naming_its_line(
    repo: GitRepo, conveyor: Conveyor, command: str
) -> None:
    repo.write("conveyor.yml", OVER_INDENTED_ARTIFACTS)
    repo.commit("pipeline")

    result = conveyor(command)

    assert result.returncode == 1
    # validate names the file on disk, run the file at the commit (conveyor.yml@abc1234).
    assert ":6:7: jobs.build.run: `artifacts:` is inside the `run: |` block" in result.stderr
    assert result.stderr.count("is inside the") == 1
    assert conveyor("runs", "--json", check=True).json() == []


def test_conveyor_validate_accepts_colons_in_shell_lines(repo: GitRepo, conveyor: Conveyor) -> None:
    repo.write(
        "conveyor.yml",
        "service: shop\njobs:\n  build:\n    run: |\n      echo foo: bar\n"
        "      case $x in a) echo b: c ;; esac\n",
    )

    result = conveyor("validate")

    assert result.returncode == 0, result.output
    assert "conveyor.yml is valid: service shop, 1 job" in result.stdout
