"""Each kind of mistake in conveyor.yml, as the user sees it: file:line:col: path: message."""

import textwrap
from pathlib import Path

import pytest

from conveyor.spec import PipelineError, Problem, load_pipeline, parse_pipeline


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(textwrap.dedent(text).lstrip("\n"))
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def test_unknown_key_suggests_the_nearest_valid_key() -> None:
    assert problems("""
        service: shop-api
        jobs:
          lint:
            run: ruff check .
          test:
            run: pytest -q
          package:
            need: [lint, test]
            run: python -m build
    """) == ["conveyor.yml:8:5: jobs.package: unknown key 'need' — did you mean 'needs'?"]


def test_problem_fields_are_one_based_and_structured() -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline("service: a\njobs:\n  x:\n    runs: make\n", "ci/conveyor.yml")
    assert info.value.problems == [
        Problem("ci/conveyor.yml", 4, 5, "jobs.x", "unknown key 'runs'", "did you mean 'run'?")
    ]


def test_unknown_key_without_a_near_miss_lists_the_valid_keys() -> None:
    assert problems("service: a\nflavour: x\njobs: {x: {run: y}}\n") == [
        "conveyor.yml:2:1: unknown key 'flavour' — valid keys: concurrency, defaults, "
        "environments, jobs, notify, on, publish, service"
    ]


def test_misspelt_required_key_is_reported_once() -> None:
    assert problems("servce: a\njobs: {x: {run: y}}\n") == [
        "conveyor.yml:1:1: unknown key 'servce' — did you mean 'service'?"
    ]


def test_unknown_keys_deep_inside_environments() -> None:
    assert problems("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production:
            health:
              http: {path: /healthz, expct: 200}
            aproval: {approvers: [ops]}
    """) == [
        "conveyor.yml:6:30: environments.production.health.http: unknown key 'expct' "
        "— did you mean 'expect'?",
        "conveyor.yml:7:5: environments.production: unknown key 'aproval' "
        "— did you mean 'approval'?",
    ]


def test_yaml_syntax_error_has_the_mark_and_where_the_construct_started() -> None:
    assert problems("""
        service: a
        jobs:
          lint:
            run: "unterminated
    """) == [
        "conveyor.yml:5:1: YAML syntax error: found unexpected end of stream "
        "— while scanning a quoted scalar that starts at line 4, column 10"
    ]


def test_tab_indentation_gets_a_hint() -> None:
    assert problems("service: a\njobs:\n\tlint: {run: x}\n") == [
        "conveyor.yml:3:1: YAML syntax error: found character '\\t' that cannot start any token "
        "— indent with spaces: YAML does not allow tabs for indentation"
    ]


def test_bad_indentation_points_at_the_line() -> None:
    assert problems("service: a\njobs:\n  lint:\n    run: x\n   test:\n    run: y\n") == [
        "conveyor.yml:5:4: YAML syntax error: expected <block end>, but found "
        "'<block mapping start>' — check the indentation of this line "
        "(while parsing a block mapping that starts at line 3, column 3)"
    ]


def test_two_documents_are_refused() -> None:
    assert problems("service: a\njobs: {x: {run: y}}\n---\nservice: b\n") == [
        "conveyor.yml:3:1: YAML syntax error: the file holds more than one YAML document "
        "— a pipeline file is one document: remove this '---' and what follows, or merge them"
    ]


def test_duplicate_keys_at_any_depth_name_both_lines() -> None:
    assert problems("""
        service: a
        jobs:
          lint:
            run: x
            run: y
          lint:
            run: z
        service: b
    """) == [
        "conveyor.yml:5:5: jobs.lint: duplicate key 'run' (first defined on line 4)",
        "conveyor.yml:6:3: jobs: duplicate key 'lint' (first defined on line 3)",
        "conveyor.yml:8:1: duplicate key 'service' (first defined on line 1)",
    ]


def test_duplicate_key_in_a_flow_mapping_names_the_column() -> None:
    assert problems("service: a\njobs: {x: {run: y, env: {A: 1, A: 2}}}\n") == [
        "conveyor.yml:2:32: jobs.x.env: duplicate key 'A' (first defined at column 26 of this line)"
    ]


def test_unknown_needs_suggest_the_nearest_job() -> None:
    assert problems("""
        service: a
        jobs:
          build: {run: make}
          test:
            needs: [buld, nothing_like_it]
            run: make test
          pkg:
            needs: tset
            run: make dist
    """) == [
        "conveyor.yml:5:13: jobs.test.needs[0]: unknown job 'buld' in needs "
        "— did you mean 'build'?",
        "conveyor.yml:5:19: jobs.test.needs[1]: unknown job 'nothing_like_it' in needs "
        "— jobs: build, pkg, test",
        "conveyor.yml:8:12: jobs.pkg.needs: unknown job 'tset' in needs — did you mean 'test'?",
    ]


def test_cycles_in_needs_are_printed() -> None:
    assert problems("""
        service: a
        jobs:
          a: {run: x, needs: [c]}
          b: {run: x, needs: a}
          c: {run: x, needs: [b]}
          d: {run: x, needs: [d]}
          e: {run: x, needs: [a]}
    """) == [
        "conveyor.yml:3:23: jobs.a.needs[0]: dependency cycle: a -> c -> b -> a",
        "conveyor.yml:6:23: jobs.d.needs[0]: dependency cycle: d -> d",
    ]


def test_a_long_cycle_is_shortened_to_one_readable_line() -> None:
    jobs = "".join(f"  j{i}: {{run: x, needs: [j{(i - 1) % 50}]}}\n" for i in range(50))
    assert problems(f"service: a\njobs:\n{jobs}") == [
        "conveyor.yml:3:24: jobs.j0.needs[0]: dependency cycle: "
        "j0 -> j49 -> j48 -> j47 -> j46 -> ... -> j3 -> j2 -> j1 -> j0 (50 jobs)"
    ]


def test_bad_durations() -> None:
    assert problems("""
        service: a
        jobs:
          x:
            run: make
            timeout: 10 minutes
          y:
            run: make
            timeout: 0s
          z:
            run: make
            timeout: 30s1m
    """) == [
        "conveyor.yml:5:14: jobs.x.timeout: invalid duration '10 minutes': "
        "use a number with a unit, e.g. 30s, 10m, 2h",
        "conveyor.yml:8:14: jobs.y.timeout: duration must be greater than 0, got '0s'",
        "conveyor.yml:11:14: jobs.z.timeout: invalid duration '30s1m': "
        "use a number with a unit, e.g. 30s, 10m, 2h",
    ]


@pytest.mark.parametrize("run", ['""', '"   "', "", "|\n      \n"])
def test_empty_or_whitespace_run(run: str) -> None:
    assert problems(f"service: a\njobs:\n  x:\n    run: {run}\n")[0].startswith("conveyor.yml:4:")
    assert problems(f"service: a\njobs:\n  x:\n    run: {run}\n")[0].endswith(
        ": jobs.x.run: empty run: give the command(s) to execute"
    )


def test_empty_run_in_steps_verify_and_health_commands() -> None:
    assert problems("""
        service: a
        jobs:
          x:
            steps:
              - run: " "
        environments:
          staging:
            health: {command: {run: ""}}
            verify: [{run: "\\t"}]
    """) == [
        "conveyor.yml:5:14: jobs.x.steps[0].run: empty run: give the command(s) to execute",
        "conveyor.yml:8:29: environments.staging.health.command.run: empty run: "
        "give the command(s) to execute",
        "conveyor.yml:9:20: environments.staging.verify[0].run: empty run: "
        "give the command(s) to execute",
    ]


def test_wrong_types() -> None:
    assert problems("""
        service: a
        jobs:
          x:
            run: make
            retries: "x"
            continue_on_error: maybe
          y:
            needs: 5
            run: make
            env: [A, B]
          z:
            steps: run make
    """) == [
        "conveyor.yml:5:14: jobs.x.retries: expected an integer, got 'x'",
        "conveyor.yml:6:24: jobs.x.continue_on_error: expected true or false, got 'maybe'",
        "conveyor.yml:8:12: jobs.y.needs: expected a string or a list of strings, got 5",
        "conveyor.yml:10:5: jobs.y.env: expected a mapping, got a list",
        "conveyor.yml:12:12: jobs.z.steps: expected a list, got 'run make'",
    ]


def test_out_of_range_and_choices() -> None:
    assert problems("""
        service: a
        jobs:
          x: {run: make, retries: 11, if: sucess, shell: zsh}
        defaults: {parallelism: 0}
    """) == [
        "conveyor.yml:3:27: jobs.x.retries: must be at most 10, got 11",
        "conveyor.yml:3:35: jobs.x.if: expected 'success', 'failure' or 'always', got 'sucess' "
        "— did you mean 'success'?",
        "conveyor.yml:3:50: jobs.x.shell: expected 'bash' or 'sh', got 'zsh' — did you mean 'sh'?",
        "conveyor.yml:4:25: defaults.parallelism: must be at least 1, got 0",
    ]


def test_job_with_both_run_and_steps_or_neither() -> None:
    assert problems("""
        service: a
        jobs:
          both:
            run: make
            steps: [{run: make}]
          neither:
            timeout: 1m
          no_steps:
            steps: []
    """) == [
        "conveyor.yml:3:3: jobs.both: job has both 'run' and 'steps': "
        "use 'run' for one command, 'steps' for several",
        "conveyor.yml:6:3: jobs.neither: job has neither 'run' nor 'steps': "
        "give the command(s) to execute",
        "conveyor.yml:9:5: jobs.no_steps.steps: no steps: give at least one step, or use 'run'",
    ]


def test_missing_required_keys_point_at_the_enclosing_key() -> None:
    assert problems("""
        jobs:
          x:
            steps:
              - name: build
        environments:
          production:
            health:
              prometheus: {below: 0.01}
    """) == [
        "conveyor.yml:1:1: missing required key 'service'",
        "conveyor.yml:4:9: jobs.x.steps[0]: missing required key 'run'",
        "conveyor.yml:8:7: environments.production.health.prometheus: missing required key 'query'",
    ]


def test_environment_after_unknown_or_cyclic() -> None:
    assert problems("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production: {after: stagin}
          staging: {after: qa}
          qa: {after: staging}
          self: {after: self}
    """) == [
        "conveyor.yml:4:23: environments.production.after: unknown environment 'stagin' in after "
        "— did you mean 'staging'?",
        "conveyor.yml:5:20: environments.staging.after: promotion cycle: staging -> qa -> staging",
        "conveyor.yml:7:17: environments.self.after: promotion cycle: self -> self",
    ]


def test_environment_field_errors() -> None:
    assert problems("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production:
            tier: prod
            approval: {approvers: [], required: 0}
            deploy: {target: Process, strategy: canary}
            health: {prometheus: {query: up}}
            on_failure: explode
          staging:
            health: {}
    """) == [
        "conveyor.yml:5:11: environments.production.tier: expected 'development', 'staging' or "
        "'production', got 'prod'",
        "conveyor.yml:6:16: environments.production.approval.approvers: "
        "approval needs at least one approver",
        "conveyor.yml:6:41: environments.production.approval.required: must be at least 1, got 0",
        "conveyor.yml:7:22: environments.production.deploy.target: target 'Process' is not valid: "
        "use lowercase letters, digits, '_' and '-'",
        "conveyor.yml:7:41: environments.production.deploy.strategy: expected 'recreate', "
        "'blue-green' or 'rolling', got 'canary'",
        "conveyor.yml:8:14: environments.production.health.prometheus: "
        "give exactly one of 'below' or 'above'",
        "conveyor.yml:9:17: environments.production.on_failure: expected 'rollback', 'hold' or "
        "'none', got 'explode'",
        "conveyor.yml:11:5: environments.staging.health: "
        "health has no checks: add 'http', 'command', 'prometheus' or 'tcp'",
    ]


def test_notify_errors() -> None:
    assert problems("""
        service: a
        jobs: {x: {run: y}}
        notify:
          - slack: {webhook: "https://hooks.example.com/x"}
            email: {to: a@example.com}
          - on: [deployment.faild]
            webhook: {url: https://example.com/hook}
          - on: [run.failed]
    """) == [
        "conveyor.yml:4:5: notify[0]: notifier has both 'slack' and 'email': "
        "use one list entry per channel",
        "conveyor.yml:6:10: notify[1].on[0]: unknown event 'deployment.faild' "
        "— did you mean 'deployment.failed'?",
        "conveyor.yml:8:5: notify[2]: notifier needs one of 'slack', 'webhook', 'email' or 'inbox'",
    ]


def test_names_must_be_valid() -> None:
    assert problems("""
        service: Shop API
        jobs:
          "bad name": {run: y}
          ok: {run: y, env: {MY-VAR: "1"}}
    """) == [
        "conveyor.yml:1:10: service: service name 'Shop API' is not valid: use lowercase letters, "
        "digits, '.', '_' and '-', starting with a letter or digit",
        "conveyor.yml:3:3: jobs: job name 'bad name' is not valid: use letters, digits, '_', '.' "
        "and '-', not starting with '.' or '-'",
        "conveyor.yml:4:22: jobs.ok.env: environment variable name 'MY-VAR' is not valid: "
        "use letters, digits and '_'",
    ]


@pytest.mark.parametrize("jobs", ["jobs: {}", "jobs:", "jobs: ~"])
def test_empty_jobs(jobs: str) -> None:
    [problem] = problems(f"service: a\n{jobs}\n")
    assert problem.startswith("conveyor.yml:2:")
    assert problem.endswith(": jobs: no jobs defined: add at least one job")


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("hello\n", "'hello'"), ("42\n", "42"), ("~\n", "an empty value")],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    assert problems(text) == [
        "conveyor.yml:1:1: the top level must be a mapping with keys such as 'service' and "
        f"'jobs', got {got}"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == [
        "conveyor.yml: the file is empty: a pipeline needs at least 'service' and 'jobs'"
    ]


def test_all_problems_are_collected_and_sorted_by_line() -> None:
    found = problems("""
        service: a
        jobs:
          b: {run: x, needs: [nope]}
          a: {run: "", retries: lots}
          a: {run: x}
          c: {run: x, timeout: soon}
        environments:
          prod: {after: nowhere}
    """)
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == [3, 4, 4, 5, 6, 8]


def test_yaml_layer_problems_are_not_repeated_by_validation() -> None:
    assert problems("service: a\njobs: {x: {run: y, retries: !!int abc}}\n") == [
        "conveyor.yml:2:29: jobs.x.retries: 'abc' is not a valid !!int"
    ]


def test_unsupported_tags_and_complex_keys() -> None:
    assert problems("service: !!binary aGk=\n? [a, b]\n: c\njobs: !thing {x: {run: y}}\n") == [
        "conveyor.yml:1:10: service: unsupported YAML tag 'tag:yaml.org,2002:binary' "
        "— write the value as a string",
        "conveyor.yml:2:3: a key must be a plain name, not a list or mapping",
        "conveyor.yml:4:7: jobs: unsupported YAML tag '!thing'",
    ]


def test_alias_bomb_and_recursive_alias_are_contained() -> None:
    rows = ["a: &a [1,1,1,1,1,1,1,1,1,1]"]
    rows += [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcde", "bcdef", strict=True)
    ]
    [bomb] = problems("\n".join(rows) + "\n")
    assert bomb.endswith(
        "the document expands to more than 100000 values — check the use of aliases (*name)"
    )
    assert "conveyor.yml:2:4: x[0]: an alias refers to the value that contains it" in problems(
        "service: a\nx: &a [*a]\njobs: {x: {run: y}}\n"
    )


def test_deep_nesting_is_refused() -> None:
    assert problems("[" * 500) == ["conveyor.yml: nested more than 100 levels deep"]
    assert problems("a:\n" + "".join(f"{' ' * i}- \n" for i in range(1, 300)))[0].endswith(
        "nested more than 100 levels deep"
    )


def test_control_characters_in_names_are_escaped() -> None:
    assert problems('service: a\n"tab\\there": 1\njobs:\n  "x\\ny": {run: y}\n') == [
        "conveyor.yml:2:1: unknown key 'tab\\there' — valid keys: concurrency, defaults, "
        "environments, jobs, notify, on, publish, service",
        "conveyor.yml:4:3: jobs: job name 'x\\ny' is not valid: use letters, digits, '_', '.' "
        "and '-', not starting with '.' or '-'",
    ]


def test_control_characters() -> None:
    assert problems("service: a\x00\n") == [
        "conveyor.yml:1:11: the file contains a character YAML does not allow (#x0000) "
        "— a pipeline file must be plain UTF-8 text, not a binary file"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path / "conveyor.yml")
    assert str(info.value) == f"{tmp_path / 'conveyor.yml'}: file not found"
    with pytest.raises(PipelineError, match="is a directory"):
        load_pipeline(tmp_path)


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    png = tmp_path / "logo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(PipelineError) as info:
        load_pipeline(png)
    assert [(p.line, p.column, p.message) for p in info.value.problems] == [
        (1, 1, "not UTF-8 text (byte 0x89 cannot be decoded)")
    ]
    latin1 = tmp_path / "conveyor.yml"
    latin1.write_bytes("service: a\njobs:\n  x: {run: echo ça}\n".encode("latin-1"))
    with pytest.raises(PipelineError) as info:
        load_pipeline(latin1)
    assert str(info.value) == (
        f"{latin1}:3:17: not UTF-8 text (byte 0xe7 cannot be decoded) — a pipeline file must be "
        "UTF-8 text: re-save it as UTF-8 (or is it a binary file?)"
    )


def test_pipeline_error_is_a_conveyor_error() -> None:
    from conveyor.errors import ConveyorError

    with pytest.raises(ConveyorError):
        parse_pipeline("")


def test_a_secret_inside_a_command_is_refused_with_the_env_way() -> None:
    assert problems("""
        service: shop-api
        jobs:
          publish:
            steps:
              - run: echo building
              - run: twine upload --password ${{ secrets.PYPI }} dist/*
    """) == [
        "conveyor.yml:6:14: jobs.publish.steps[1].run: secrets cannot be used inside run: "
        "(found secrets.PYPI) — pass it through env: { PYPI: '${{ secrets.PYPI }}' } "
        "and use $PYPI in the command"
    ]


def test_target_options_are_checked_where_written() -> None:
    assert problems("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production:
            deploy:
              target: ssh
              hosts: [deploy@web1]
              conect_timeout: 5
              timeout: -1
          staging:
            deploy: {target: nomad}
          dev:
            deploy: {prot: 8080, start: ./run}
    """) == [
        "conveyor.yml:8:7: environments.production.deploy: unknown key 'conect_timeout' "
        "— did you mean 'connect_timeout'?",
        "conveyor.yml:9:16: environments.production.deploy.timeout: "
        "must be a positive number of seconds, got -1",
        "conveyor.yml:11:22: environments.staging.deploy.target: unknown deploy target 'nomad' "
        "— did you mean 'command'?",
        "conveyor.yml:13:14: environments.dev.deploy: unknown key 'prot' — did you mean 'port'?",
    ]
