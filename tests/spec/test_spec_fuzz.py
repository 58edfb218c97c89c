"""No input, however odd, gets anything but a Pipeline or a PipelineError out of the loader."""

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.spec import Pipeline, PipelineError, parse_pipeline

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "service", "on", "jobs", "environments", "notify", "defaults", "concurrency", "push",
    "branches", "needs", "run", "steps", "if", "timeout", "retries", "env", "artifacts", "image",
    "after", "tier", "approval", "approvers", "deploy", "target", "health", "http", "prometheus",
    "for", "below", "verify", "slack", "on_failure", "a", "b", "<<", "x-y",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "30s", "10 minutes", "main", "a", "b", "yes", "on", "${{ x }}"]),
    st.text(max_size=12),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    ),
    max_leaves=25,
)
YAMLISH = [*list("{}[]:,-#&*!|>'\"%@`?\n\t "), "---", "<<: *a", "&a", "  ", "on:", "jobs:"]


def check(text: str) -> None:
    error: PipelineError | None = None
    try:
        result = parse_pipeline(text)
    except PipelineError as exc:
        error = exc
    if error is None:
        assert isinstance(result, Pipeline)
        return
    assert error.problems
    assert all(p.message and (p.line is None or p.line >= 1) for p in error.problems)
    assert str(error).count("\n") == len(error.problems) - 1


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(YAMLISH) | st.text(max_size=3), max_size=40).map("".join))
def test_random_yaml_punctuation(text: str) -> None:
    check(text)


@FUZZ
@given(values)
def test_random_nested_structures(value: object) -> None:
    check(yaml.safe_dump(value, allow_unicode=True))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=3),
)
def test_near_valid_pipelines(job_fields: dict[str, Any], extra: dict[str, Any]) -> None:
    doc = {"service": "a", "jobs": {"a": {"run": "x", **job_fields}, "b": {"run": "y"}}, **extra}
    check(yaml.safe_dump(doc, allow_unicode=True))
