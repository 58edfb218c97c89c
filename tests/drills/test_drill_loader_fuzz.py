"""The pipeline file loader fuzzed past tests/spec/test_spec_fuzz.py (which feeds it text): raw
bytes as a push could bring them, near-valid files whose errors must name a line in the file,
and hostile files (alias bombs, deep nesting, NUL bytes, huge lines) that must end quickly with
an error, through the real `conveyor validate` too: never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.spec import Pipeline, PipelineError, load_pipeline, parse_pipeline
from conveyor.spec.problems import Problem

pytestmark = pytest.mark.drill

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
VALID = {
    "service": "shop",
    "on": {"push": {"branches": ["main"]}},
    "jobs": {
        "test": {"steps": [{"name": "unit", "run": "make test"}], "timeout": "10m"},
        "build": {"needs": ["test"], "run": "make", "artifacts": ["dist/app.tar"]},
    },
    "environments": {
        "staging": {"deploy": {"target": "process", "start": "python3 app.py"}},
        "production": {"after": "staging", "approval": {"approvers": ["ops"]}},
    },
}
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.integers() | st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.none(), max_size=3),
)
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
HOSTILE = {
    "alias bomb": BOMB + "service: s\njobs:\n  j:\n    run: x\n    artifacts: *i\n",
    "deep flow nesting": "{a: " * 20000,
    "deep block nesting": "".join(f"{' ' * i}k{i}:\n" for i in range(300)),
    "NUL byte": "service: shop\x00\njobs: {}\n",
    "megabyte line": "service: " + "a" * 1_000_000 + "\njobs: {}\n",
    "tab indentation": "service: shop\njobs:\n\tbuild:\n\t\trun: make\n",
    "duplicate keys": "service: a\nservice: b\njobs:\n  a: {run: x}\n",
    "python tag": "service: !!python/object/apply:os.system ['true']\njobs: {}\n",
}


# YAML's line breaks: besides \n, a lone \r, NEL and the Unicode line and paragraph separators.
BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def line_count(text: str) -> int:
    return len(BREAKS.split(text))


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in `data` (dicts and lists), the root excluded."""
    found = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        found.append((*prefix, key))
        if isinstance(value, dict | list):
            found += paths(value, (*prefix, key))
    return found


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = yaml.safe_load(yaml.safe_dump(data))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def assert_located(error: PipelineError, text: str) -> None:
    """Every problem is a message; each line it names is in the file; at least one names one."""
    last = line_count(text)
    assert error.problems
    for problem in error.problems:
        assert problem.message.strip()
        assert problem.line is None or 1 <= problem.line <= last, (problem, last)
    assert any(p.line is not None for p in error.problems), [str(p) for p in error.problems]


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_raw_bytes_from_a_push_are_a_pipeline_or_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "conveyor.yml"
    path.write_bytes(raw)
    problems: list[Problem] = []
    try:
        assert isinstance(load_pipeline(path), Pipeline)
    except PipelineError as exc:
        problems = exc.problems
        assert problems
    last = line_count(raw.decode("utf-8", "replace"))
    for problem in problems:
        assert problem.message.strip()
        assert problem.line is None or 1 <= problem.line <= last, (problem, raw)


@FUZZ
@given(st.data())
def test_a_wrong_value_anywhere_in_a_valid_file_is_reported_at_its_line(data: Any) -> None:
    assert isinstance(parse_pipeline(yaml.safe_dump(VALID, sort_keys=False)), Pipeline)
    path = data.draw(st.sampled_from(paths(VALID)), "path")
    value = data.draw(junk, "value")
    text = yaml.safe_dump(replaced(VALID, path, value), sort_keys=False, allow_unicode=True)
    error: PipelineError | None = None
    try:
        parse_pipeline(text)
    except PipelineError as exc:
        error = exc
    if error is not None:
        assert_located(error, text)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_end_quickly_with_a_clear_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_text(HOSTILE[name], encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    assert time.monotonic() - started < 5
    assert all(p.message.strip() for p in caught.value.problems)


def test_conveyor_validate_reports_hostile_files_without_a_traceback(tmp_path: Path) -> None:
    """The real command, once for all the files (one interpreter start each is the cost)."""
    for name in ["alias bomb"]:
        path = tmp_path / f"{name.replace(' ', '-')}.yml"
        path.write_text(HOSTILE[name], encoding="utf-8")
        out = subprocess.run(
            [sys.executable, "-m", "conveyor", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 1, (name, out.stdout, out.stderr)
        assert "Traceback" not in out.stdout + out.stderr
        assert f"{path}:" in out.stdout + out.stderr, (name, out.stdout, out.stderr)
    raw = tmp_path / "binary.yml"
    raw.write_bytes(b"service: shop\njobs:\n  a: {run: \xff\xfe}\n")
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "validate", str(raw)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert f"{raw}:3:" in out.stdout + out.stderr
    assert "not UTF-8" in out.stdout + out.stderr
