"""`explain_pipeline`: what will run, in what order, with every default visible."""

from pathlib import Path

from conveyor.spec import explain_pipeline, load_pipeline, parse_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop-api" / "conveyor.yml"


def test_explain_the_design_example() -> None:
    text = explain_pipeline(load_pipeline(EXAMPLE))
    lines = text.splitlines()
    assert lines[0] == "service: shop-api"
    assert "triggers: push to main" in lines
    assert "jobs: 4 jobs in 3 stages" in lines
    stage_lines = [lines.index(f"  stage {n}:") for n in (1, 2, 3)]
    assert stage_lines == sorted(stage_lines)
    assert lines[stage_lines[0] + 1].startswith("    lint: needs nothing; 1 step; timeout 1h")
    assert lines[stage_lines[0] + 2].startswith("    test: ")
    assert lines[stage_lines[1] + 1] == (
        "    package: needs lint, test; 1 step; timeout 1h; retries 0; artifacts dist/*.whl; "
        "no image (runs on the host); runs on any runner"
    )
    assert lines[stage_lines[2] + 1].startswith("    image: needs package;")
    assert "image localhost/build-tools" in lines[stage_lines[2] + 1]
    assert "  chain: staging -> production" in lines
    assert lines.index("  staging: tier staging") < lines.index(
        "  production: tier production, after staging"
    )
    assert "    approval: 1 of [ops], no self-approval, timeout 24h (then reject)" in lines
    assert (
        "    deploy: target process, strategy blue-green, start: python -m shop_api --port $PORT"
        in (lines)
    )
    assert "    health: http GET /healthz expects 200 within 30s" in lines
    assert any("prometheus `sum(rate(" in line and "below 0.01 for 2m" in line for line in lines)
    assert "    verify: 1 step" in lines
    assert "    on_failure: rollback, keep 3 releases" in lines
    assert (
        "  slack on approval.requested, deployment.failed, deployment.rolledback, "
        "deployment.succeeded"
    ) in lines
    assert "\x1b" not in text
    assert "[bold" not in text


def test_explain_shows_overrides_branches_and_absences() -> None:
    p = parse_pipeline(
        "service: a\n"
        "jobs:\n"
        "  build: {run: make, timeout: 90s, retries: 2, runs_on: [linux, big], if: always}\n"
        "  x: {steps: [{run: a}, {run: b}], needs: build, continue_on_error: true}\n"
        "defaults: {timeout: 10m}\n"
        "environments:\n"
        "  staging: {}\n"
        "  eu: {after: staging, supersede: true}\n"
        "  us: {after: staging, deploy: {target: ssh, hosts: us1}}\n"
    )
    text = explain_pipeline(p)
    assert (
        "    build: needs nothing; 1 step; timeout 1m30s; retries 2; no artifacts; "
        "no image (runs on the host); runs on linux, big; if always"
    ) in text
    assert "    x: needs build; 2 steps; timeout 10m; retries 0;" in text
    assert "continues on error" in text
    assert "  chain: staging -> eu\n  chain: staging -> us\n" in text
    assert "    approval: none\n" in text
    assert "    health: none (done as soon as deployed)\n" in text
    assert "    deploy: target ssh, strategy recreate, options: hosts=us1\n" in text
    assert "newest release supersedes queued ones" in text
    assert "triggers: none (runs start only when asked)" in text
    assert text.endswith("notify: none\n")


def test_explain_without_environments() -> None:
    text = explain_pipeline(parse_pipeline("service: a\njobs: {x: {run: y}}\n"))
    assert "environments: none (no deployments)" in text
    assert "jobs: 1 job in 1 stage" in text
