"""JSON Schema of `conveyor.yml` for editors (yaml-language-server, VS Code, JetBrains)."""

from typing import Any

from conveyor.extensions import Kind, registry
from conveyor.spec.models import EXTENSION_PREFIX, Pipeline

SCHEMA_ID = "urn:conveyor:schema:pipeline:1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def pipeline_json_schema() -> dict[str, Any]:
    """Draft 2020-12 schema of the pipeline file, keys spelled as in YAML (`if`, `for`, `from`).

    Editors get completion and descriptions from it; it is looser than `parse_pipeline` in
    places JSON Schema cannot say (unknown `needs`, cycles, order of duration units)."""
    schema = Pipeline.model_json_schema(by_alias=True, mode="validation")
    _target_options(schema["$defs"])
    schema["patternProperties"] = {
        f"^{EXTENSION_PREFIX}": {"description": "Ignored: a place for YAML anchors to reuse."}
    }
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "Conveyor pipeline (conveyor.yml)",
    }


def _target_options(defs: dict[str, Any]) -> None:
    """Each target's options in `Deploy`: its model among the definitions, and a rule that
    applies its keys when `target` names it (`process` also when no target is given)."""
    deploy = defs["Deploy"]
    rules: list[dict[str, Any]] = []
    links: list[str] = []
    for name, extension in registry().of(Kind.TARGET).items():
        options = extension.options.model_json_schema(
            by_alias=True, mode="validation", ref_template="#/$defs/{model}"
        )
        defs.update(options.pop("$defs", {}))
        title = extension.options.__name__
        defs[title] = options
        links.append(f"`{name}`: [{title}](#{title.lower()})")
        named: dict[str, Any] = {"properties": {"target": {"const": name}}, "required": ["target"]}
        when = {"anyOf": [named, {"not": {"required": ["target"]}}]} if name == "process" else named
        keys = {
            "properties": options.get("properties", {}),
            "required": options.get("required", []),
        }
        rules.append({"if": when, "then": keys})
    deploy["allOf"] = rules
    deploy["description"] = f"{deploy.get('description', '')} Options of each target: " + (
        "; ".join(links) + "."
    )
