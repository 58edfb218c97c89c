"""What a valid pipeline file turns into: typed values, defaults, orders, secrets."""

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.spec import Job, Pipeline, PipelineError, Step, load_pipeline, parse_pipeline
from conveyor.spec.durations import (
    DurationError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop-api" / "conveyor.yml"


def parse(text: str) -> Pipeline:
    return parse_pipeline(textwrap.dedent(text).lstrip("\n"))


def test_the_design_example_loads() -> None:
    p = load_pipeline(EXAMPLE)
    assert p.service == "shop-api"
    assert p.on is not None
    assert p.on.push is not None
    assert p.on.push.branches == ["main"]
    assert list(p.jobs) == ["lint", "test", "package", "image"]
    assert p.jobs["package"].needs == ["lint", "test"]
    assert p.jobs["package"].artifacts == ["dist/*.whl"]
    assert p.jobs["image"].image == "localhost/build-tools"
    assert p.jobs["image"].run is not None
    assert p.jobs["image"].run.count("podman") == 2
    staging, production = p.environments["staging"], p.environments["production"]
    assert staging.tier == "staging"
    assert staging.after is None
    assert staging.health is not None
    assert staging.health.http is not None
    assert staging.health.http.path == "/healthz"
    assert staging.health.http.within == 30
    assert [v.run for v in staging.verify] == [
        'pytest tests/smoke --base-url "$CONVEYOR_DEPLOY_URL"'
    ]
    assert production.after == "staging"
    assert production.tier == "production"
    assert production.approval is not None
    assert production.approval.approvers == ["ops"]
    assert production.approval.timeout == 86400
    assert production.deploy.strategy == "blue-green"
    assert production.deploy.start == "python -m shop_api --port $PORT"
    assert production.health is not None
    assert production.health.prometheus is not None
    assert production.health.prometheus.below == 0.01
    assert production.health.prometheus.for_ == 120
    assert production.on_failure == "rollback"
    [slack] = p.notify
    assert slack.kind == "slack"
    assert slack.slack is not None
    assert slack.slack.webhook == "${{ secrets.SLACK_WEBHOOK }}"
    assert slack.on == [
        "approval.requested",
        "deployment.failed",
        "deployment.rolledback",
        "deployment.succeeded",
    ]
    assert p.job_order() == [["lint", "test"], ["package"], ["image"]]
    assert p.environment_order() == ["staging", "production"]
    assert p.secret_references() == {"SLACK_WEBHOOK"}


def test_defaults_are_filled_in() -> None:
    p = parse("service: a\njobs: {x: {run: y}}\n")
    assert p.on is None
    assert p.environments == {}
    assert p.notify == []
    assert p.concurrency is None
    assert p.defaults.timeout == 3600
    assert p.defaults.shell == "bash"
    assert p.defaults.log_limit == 64 * 1024 * 1024
    assert p.defaults.retries == 0
    job = p.jobs["x"]
    assert (job.needs, job.if_, job.timeout, job.retries, job.env) == (
        [],
        "success",
        None,
        None,
        {},
    )
    assert (job.artifacts, job.runs_on, job.continue_on_error) == ([], [], False)


def test_yaml_1_1_booleans_stay_text_except_where_a_boolean_is_expected() -> None:
    p = parse("""
        service: a
        on:
          push: {branches: [main, yes, on, off]}
        jobs:
          x:
            run: make
            continue_on_error: yes
            env: {A: yes, B: 1.10, C: 0x1F, D: true, E: 8080, F: "quoted"}
    """)
    assert p.on is not None
    assert p.on.push is not None
    assert p.on.push.branches == ["main", "yes", "on", "off"]
    job = p.jobs["x"]
    assert job.continue_on_error is True
    # Environment values are passed exactly as written.
    assert job.env == {
        "A": "yes",
        "B": "1.10",
        "C": "0x1F",
        "D": "true",
        "E": "8080",
        "F": "quoted",
    }


def test_keys_are_always_their_source_text() -> None:
    p = parse("service: a\njobs:\n  1: {run: y}\n  true: {run: z}\n  null: {run: w}\n")
    assert list(p.jobs) == ["1", "true", "null"]


def test_single_strings_are_accepted_where_lists_are() -> None:
    p = parse("""
        service: a
        on: {push: {branches: main, paths: src/**}}
        jobs:
          a: {run: x}
          b: {run: x, needs: a, runs_on: linux, artifacts: dist/app}
        environments:
          production: {approval: {approvers: ops}}
        notify:
          - email: {to: ops@example.com, from: ci@example.com}
            on: run.failed
    """)
    assert p.on is not None
    assert p.on.push is not None
    assert (p.on.push.branches, p.on.push.paths) == (["main"], ["src/**"])
    b = p.jobs["b"]
    assert (b.needs, b.runs_on, b.artifacts) == (["a"], ["linux"], ["dist/app"])
    approval = p.environments["production"].approval
    assert approval is not None
    assert approval.approvers == ["ops"]
    [email] = p.notify
    assert email.email is not None
    assert email.email.to == ["ops@example.com"]
    assert email.email.from_ == "ci@example.com"
    assert email.on == ["run.failed"]


def test_numbers_are_accepted_as_strings() -> None:
    p = parse("service: 2024\njobs: {x: {run: 42, needs: [], image: 3}}\nconcurrency: 1\n")
    assert (p.service, p.jobs["x"].run, p.jobs["x"].image, p.concurrency_group()) == (
        "2024",
        "42",
        "3",
        ("1", False),
    )


def test_concurrency_is_a_group_or_a_group_with_supersede() -> None:
    short = parse("service: a\nconcurrency: deploy\njobs: {x: {run: make}}\n")
    full = parse(
        "service: a\nconcurrency: {group: deploy, supersede: true}\njobs: {x: {run: make}}\n"
    )
    assert short.concurrency_group() == ("deploy", False)
    assert full.concurrency_group() == ("deploy", True)


def test_numeric_job_names_in_needs_resolve() -> None:
    p = parse("service: a\njobs:\n  1: {run: x}\n  2: {run: x, needs: [1]}\n")
    assert p.job_order() == [["1"], ["2"]]


def test_environment_tier_defaults_from_the_name() -> None:
    p = parse("""
        service: a
        jobs: {x: {run: y}}
        environments:
          development: {}
          staging: {after: development}
          qa: {after: staging}
          production: {after: qa}
          canary: {after: production, tier: production}
    """)
    tiers = {name: env.tier for name, env in p.environments.items()}
    assert tiers == {
        "development": "development",
        "staging": "staging",
        "qa": "staging",
        "production": "production",
        "canary": "production",
    }
    assert p.environment_order() == ["development", "staging", "qa", "production", "canary"]


def test_environment_order_puts_each_after_the_one_it_names() -> None:
    p = parse("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production: {after: staging}
          eu: {after: production}
          staging: {}
          preview: {}
    """)
    assert p.environment_order() == ["staging", "production", "eu", "preview"]


def test_job_order_stages_are_topological_and_sorted() -> None:
    p = parse("""
        service: a
        jobs:
          deploy: {run: x, needs: [package, docs]}
          package: {run: x, needs: [test, lint]}
          test: {run: x}
          lint: {run: x}
          docs: {run: x}
    """)
    assert p.job_order() == [["docs", "lint", "test"], ["package"], ["deploy"]]


def test_deploy_keeps_target_options() -> None:
    p = parse("""
        service: a
        jobs: {x: {run: y}}
        environments:
          production:
            deploy: {target: ssh, hosts: [a, b], identity: deploy.key, strategy: rolling}
    """)
    deploy = p.environments["production"].deploy
    assert (deploy.target, deploy.strategy) == ("ssh", "rolling")
    assert deploy.options == {"hosts": ["a", "b"], "identity": "deploy.key"}


def test_resolved_steps() -> None:
    job = Job(run="make")
    assert job.resolved_steps("build") == [Step(name="build", run="make")]
    steps = Job.model_validate(
        {
            "steps": [
                {"run": "make\nmake install"},
                {"name": "test", "run": "pytest", "if": "always"},
            ]
        }
    ).resolved_steps("build")
    assert [(s.name, s.run, s.if_) for s in steps] == [
        ("make", "make\nmake install", "success"),
        ("test", "pytest", "always"),
    ]


def test_secret_references_anywhere() -> None:
    p = parse("""
        service: a
        jobs:
          x:
            run: curl -H "$TOKEN" "$URL"
            env:
              TOKEN: "${{ secrets.TOKEN }}"
              URL: ${{secrets.URL}}
              KEY: "${{ secrets.API_KEY }}"
              PLAIN: "${{ env.HOME }}"
        environments:
          production:
            deploy: {target: ssh, hosts: web1, identity: "${{ secrets.SSH_KEY }}"}
        notify:
          - webhook: {url: https://example.com, secret: "${{ secrets.HOOK }}"}
    """)
    assert p.secret_references() == {"TOKEN", "URL", "API_KEY", "SSH_KEY", "HOOK"}


def test_merge_keys_and_extension_keys_for_reuse() -> None:
    p = parse("""
        service: a
        x-defaults: &job
          timeout: 10m
          retries: 2
          env: {CI: true}
        jobs:
          build:
            <<: *job
            run: make
            retries: 1
    """)
    build = p.jobs["build"]
    assert (build.timeout, build.retries, build.env) == (600, 1, {"CI": "true"})


def test_explicit_yaml_tags() -> None:
    p = parse("service: !!str 123\njobs: {x: {run: !!str 1.0, retries: !!int '3'}}\n")
    assert (p.service, p.jobs["x"].run, p.jobs["x"].retries) == ("123", "1.0", 3)


def test_health_defaults() -> None:
    p = parse("""
        service: a
        jobs: {x: {run: y}}
        environments:
          staging:
            health:
              http: {}
              command: {run: ./check}
              prometheus: {query: up, above: 0}
    """)
    health = p.environments["staging"].health
    assert health is not None
    assert health.http is not None
    assert health.command is not None
    assert (health.http.path, health.http.expect, health.http.within) == ("/", 200, 30)
    assert (health.http.interval, health.http.timeout, health.http.successes) == (1, 5, 1)
    assert health.prometheus is not None
    assert health.prometheus.for_ == 60


def test_models_built_in_code_check_the_graph_too() -> None:
    with pytest.raises(ValidationError, match=r"dependency cycle: a -> b -> a"):
        Pipeline.model_validate(
            {
                "service": "a",
                "jobs": {"a": {"run": "x", "needs": "b"}, "b": {"run": "x", "needs": "a"}},
            }
        )
    with pytest.raises(ValidationError, match=r"unknown environment 'nowhere' in after"):
        Pipeline.model_validate(
            {
                "service": "a",
                "jobs": {"a": {"run": "x"}},
                "environments": {"p": {"after": "nowhere"}},
            }
        )


def test_models_are_immutable() -> None:
    p = parse("service: a\njobs: {x: {run: y}}\n")
    with pytest.raises(ValidationError):
        p.service = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        (" 1.5h ", 5400.0),
        ("1m30s250ms", 90.25),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "10 minutes",
            "invalid duration '10 minutes': use a number with a unit, e.g. 30s, 10m, 2h",
        ),
        ("30", "invalid duration '30': use a number with a unit, e.g. 30s, 10m, 2h"),
        ("", "invalid duration '': use a number with a unit, e.g. 30s, 10m, 2h"),
        ("30s1m", "invalid duration '30s1m': use a number with a unit, e.g. 30s, 10m, 2h"),
        ("1m1m", "invalid duration '1m1m': use a number with a unit, e.g. 30s, 10m, 2h"),
        ("0s", "duration must be greater than 0, got '0s'"),
        (-1, "duration must be greater than 0, got -1"),
        (True, "expected a duration such as 30s, 10m or 2h, got true"),
        ([1], "expected a duration such as 30s, 10m or 2h, got a list"),
        (float("inf"), "invalid duration inf: use a number with a unit, e.g. 30s, 10m, 2h"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400, "24h"), (90, "1m30s"), (0.5, "500ms"), (3600, "1h"), (5400, "1h30m"), (1.5, "1500ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("64MiB", 64 * 2**20), ("512 KiB", 512 * 1024), ("1GB", 10**9), ("10b", 10)],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size
    assert parse_size(format_size(size)) == size


def test_bad_log_limit() -> None:
    with pytest.raises(PipelineError) as info:
        parse("service: a\njobs: {x: {run: y}}\ndefaults: {log_limit: 64 megs}\n")
    assert str(info.value) == (
        "conveyor.yml:3:23: defaults.log_limit: invalid size '64 megs': use a number of bytes or "
        "a number with a unit, e.g. 512KiB, 64MiB, 1GB"
    )
