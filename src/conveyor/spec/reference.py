"""The `conveyor.yml` reference in Markdown, generated from the JSON Schema (so the docs can
never disagree with what the loader accepts). `conveyor schema --markdown` prints it; the copy
in docs/pipeline-reference.md is checked against it by a test."""

from __future__ import annotations

import json
from typing import Any

from conveyor.spec.schema import pipeline_json_schema


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"] if p.get("type") != "null")
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and "patternProperties" in prop:
        [inner] = prop["patternProperties"].values()
        return f"map of name → {_type(inner)}"
    if kind == "object" and "additionalProperties" in prop:
        extra = prop["additionalProperties"]
        return f"map of name → {_type(extra)}" if isinstance(extra, dict) else "map"
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    return str(kind)


def _table(model: dict[str, Any]) -> list[str]:
    required = set(model.get("required", []))
    rows = ["| key | type | required | default | meaning |", "|---|---|---|---|---|"]
    for key, prop in model.get("properties", {}).items():
        value = prop.get("default")
        default = f"`{json.dumps(value)}`" if value is not None and value != {} else ""
        meaning = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        rows.append(
            f"| `{key}` | {_type(prop)} | {'yes' if key in required else ''} | {default} "
            f"| {meaning} |"
        )
    return rows


def pipeline_reference() -> str:
    schema = pipeline_json_schema()
    lines = [
        "# `conveyor.yml` reference",
        "",
        "Generated from the JSON Schema by `conveyor schema --markdown`; do not edit by hand.",
        "",
        " ".join(str(schema.get("description", "")).split()),
        "",
        "## Pipeline (the file)",
        "",
        *_table(schema),
    ]
    for name, model in sorted(schema.get("$defs", {}).items()):
        lines += ["", f"## {name}", ""]
        if model.get("description"):
            lines += [" ".join(str(model["description"]).split()), ""]
        lines += _table(model)
    return "\n".join(lines) + "\n"
