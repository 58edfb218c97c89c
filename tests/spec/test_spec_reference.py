"""docs/pipeline-reference.md is the reference generated from the schema, not a hand copy."""

from __future__ import annotations

from pathlib import Path

from conveyor.spec.reference import pipeline_reference
from conveyor.spec.schema import pipeline_json_schema

DOC = Path(__file__).parents[2] / "docs" / "pipeline-reference.md"


def test_the_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == pipeline_reference(), (
        "regenerate it: conveyor schema --markdown > docs/pipeline-reference.md"
    )


def test_every_key_of_every_model_is_documented() -> None:
    text = pipeline_reference()
    schema = pipeline_json_schema()
    for model in [schema, *schema["$defs"].values()]:
        for key in model.get("properties", {}):
            assert f"| `{key}` |" in text
