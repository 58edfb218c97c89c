"""The JSON Schema editors use: well-formed, described, and agreeing with the loader."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conveyor.spec import pipeline_json_schema
from conveyor.spec.yamlpos import read_document

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop-api" / "conveyor.yml"

_VALIDATE = """
import json, sys
import jsonschema
schema, instance = json.load(sys.stdin)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
print(json.dumps([e.message for e in validator.iter_errors(instance)]))
"""


def _jsonschema_errors(schema: dict[str, Any], instance: object) -> list[str] | None:
    """Errors from the `jsonschema` package: in this interpreter if it has it, else in another
    Python on PATH that does. None when no interpreter has it (the structural tests still run)."""
    if importlib.util.find_spec("jsonschema") is not None:
        pythons = [sys.executable]
    else:
        pythons = [p for p in dict.fromkeys([shutil.which("python3"), "/usr/bin/python3"]) if p]
    for python in pythons:
        done = subprocess.run(
            [python, "-c", _VALIDATE],
            input=json.dumps([schema, instance]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            errors: list[str] = json.loads(done.stdout)
            return errors
        assert "No module named 'jsonschema'" in done.stderr, done.stderr
    return None


def _data(text: str) -> object:
    doc = read_document(text, keep_text=lambda path: len(path) >= 2 and path[-2] == "env")
    assert not doc.findings
    return doc.data


def _walk_properties(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [("Pipeline", k, v) for k, v in schema["properties"].items()]
    for model, definition in schema["$defs"].items():
        found += [(model, k, v) for k, v in definition.get("properties", {}).items()]
    return found


def test_schema_header() -> None:
    schema = pipeline_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:conveyor:schema:pipeline:1"
    assert schema["title"] == "Conveyor pipeline (conveyor.yml)"
    assert schema["type"] == "object"
    assert schema["required"] == ["service", "jobs"]
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # plain JSON, nothing pydantic-specific left in it


def test_every_field_has_a_description() -> None:
    schema = pipeline_json_schema()
    missing = [f"{m}.{k}" for m, k, v in _walk_properties(schema) if not v.get("description")]
    assert missing == []
    assert all(d.get("description") for d in schema["$defs"].values())


def test_keys_are_spelled_as_in_yaml() -> None:
    defs = pipeline_json_schema()["$defs"]
    assert "if" in defs["Job"]["properties"]
    assert "if_" not in defs["Job"]["properties"]
    assert "if" in defs["Step"]["properties"]
    assert "for" in defs["PrometheusCheck"]["properties"]
    assert "from" in defs["EmailNotifier"]["properties"]
    assert defs["Deploy"]["additionalProperties"] is True
    closed = [name for name, d in defs.items() if name != "Deploy"]
    assert all(defs[name]["additionalProperties"] is False for name in closed)
    assert defs["Step"]["required"] == ["run"]
    assert defs["Approval"]["required"] == ["approvers"]


def test_durations_accept_the_same_spellings_as_the_loader() -> None:
    timeout = pipeline_json_schema()["$defs"]["Defaults"]["properties"]["timeout"]
    number, string = timeout["anyOf"]
    assert number == {"type": "number", "exclusiveMinimum": 0}
    pattern = re.compile(string["pattern"])
    for ok in ["30s", "500ms", "10m", "24h", "1h30m", "2d", "1.5h"]:
        assert pattern.search(ok), ok
    for bad in ["10 minutes", "30", "", "1w", "s"]:
        assert not pattern.search(bad), bad


def test_the_example_validates_against_the_schema() -> None:
    schema = pipeline_json_schema()
    example = _data(EXAMPLE.read_text())
    assert isinstance(example, dict)
    # Structural agreement that holds with or without the jsonschema package.
    assert set(example) <= set(schema["properties"])
    assert set(schema["required"]) <= set(example)
    errors = _jsonschema_errors(schema, example)
    if errors is not None:
        assert errors == []
        bad = json.loads(json.dumps(example))
        bad["jobs"]["package"]["need"] = bad["jobs"]["package"].pop("needs")
        bad["jobs"]["lint"]["retries"] = "x"
        bad["environments"]["staging"]["health"]["http"]["within"] = "10 minutes"
        assert len(_jsonschema_errors(schema, bad) or []) == 3
