"""JSON Schema of `conveyor.yml` for editors (yaml-language-server, VS Code, JetBrains)."""

from typing import Any

from conveyor.spec.models import EXTENSION_PREFIX, Pipeline

SCHEMA_ID = "urn:conveyor:schema:pipeline:1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def pipeline_json_schema() -> dict[str, Any]:
    """Draft 2020-12 schema of the pipeline file, keys spelled as in YAML (`if`, `for`, `from`).

    Editors get completion and descriptions from it; it is looser than `parse_pipeline` in
    places JSON Schema cannot say (unknown `needs`, cycles, order of duration units)."""
    schema = Pipeline.model_json_schema(by_alias=True, mode="validation")
    schema["patternProperties"] = {
        f"^{EXTENSION_PREFIX}": {"description": "Ignored: a place for YAML anchors to reuse."}
    }
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "Conveyor pipeline (conveyor.yml)",
    }
