"""The stored API responses the connector tests are served (tests/connectors/fixtures/) hold
what each provider publishes, so that the connectors are proven against the real shapes.

GitHub, GitLab, Argo CD, PagerDuty and Opsgenie cannot run here, and no live account's
responses were recorded: each stored response is the provider's own published example (or,
for Argo CD and Opsgenie, which publish a schema but no example, built to the published
schema), with only ids, times and names changed to the test's scenario. Here every one is
checked against what its provider publishes (fixtures/schemas/, sources in its README.md):

- against the provider's OpenAPI/Swagger schema where there is one (GitHub, Argo CD,
  PagerDuty, Opsgenie), with the ``jsonschema`` package;
- against the provider's documented example where there is no schema (GitLab), and for
  GitHub besides (its schema excerpts leave nested objects open): every field the example
  shows is there, with the example's JSON type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.connectors.fake import FIXTURES

SCHEMAS = FIXTURES / "schemas"

# The provider's schema excerpt, and the stored responses of that request.
VALIDATED = {
    "github-list-deployments": "github/deployments_*.json",
    "github-list-deployment-statuses": "github/statuses_*.json",
    "github-list-workflow-runs": "github/runs_*.json",
    "github-compare-commits": "github/compare_*.json",
    "github-get-commit": "github/commit_*.json",
    "argocd-application": "argocd/application_*.json",
    "pagerduty-list-incidents": "pagerduty/incidents_*.json",
    "opsgenie-list-alerts": "opsgenie/alerts_*.json",
}
# The provider's documented example response, and the stored responses of that request.
EXAMPLES = {
    "github-list-deployments": "github/deployments_*.json",
    "github-list-deployment-statuses": "github/statuses_*.json",
    "github-list-workflow-runs": "github/runs_*.json",
    "github-compare-commits": "github/compare_*.json",
    "github-get-commit": "github/commit_*.json",
    "gitlab-list-deployments": "gitlab/deployments_*.json",
    "gitlab-compare": "gitlab/compare_*.json",
    "gitlab-get-commit": "gitlab/commit_*.json",
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _cases(table: dict[str, str]) -> list[Any]:
    return [
        pytest.param(source, path, id=f"{source}:{path.name}")
        for source, pattern in table.items()
        for path in sorted(FIXTURES.glob(pattern))
    ]


def schema_errors(schema: str, response: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(_load(SCHEMAS / f"{schema}.json"))
    return [
        f"/{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(response)
    ]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def unlike_example(example: Any, response: Any, where: str = "") -> list[str]:
    """Where ``response`` lacks a field ``example`` shows, or has it with another JSON type
    (null, in either, matches any type: the providers show optional objects as null)."""
    if example is None or response is None:
        return []
    if _kind(example) != _kind(response):
        return [f"{where or '/'}: {_kind(response)}, the example has {_kind(example)}"]
    if isinstance(example, dict):
        return [
            problem
            for key, value in example.items()
            for problem in (
                unlike_example(value, response[key], f"{where}/{key}")
                if key in response
                else [f"{where}/{key}: missing"]
            )
        ]
    if isinstance(example, list) and example:
        return [
            problem
            for index, item in enumerate(response)
            for problem in unlike_example(example[0], item, f"{where}/{index}")
        ]
    return []


@pytest.mark.parametrize(("schema", "path"), _cases(VALIDATED))
def test_every_stored_response_is_valid_by_the_providers_published_schema(
    schema: str, path: Path
) -> None:
    assert schema_errors(schema, _load(path)) == []


@pytest.mark.parametrize(("example", "path"), _cases(EXAMPLES))
def test_every_stored_response_has_every_field_of_the_providers_example(
    example: str, path: Path
) -> None:
    assert unlike_example(_load(SCHEMAS / f"{example}.example.json")["value"], _load(path)) == []


@pytest.mark.parametrize("name", sorted(set(VALIDATED) & set(EXAMPLES)))
def test_the_schema_excerpts_accept_the_providers_own_examples(name: str) -> None:
    assert schema_errors(name, _load(SCHEMAS / f"{name}.example.json")["value"]) == []


def test_every_stored_response_is_checked_against_its_provider() -> None:
    checked = {
        path
        for pattern in [*VALIDATED.values(), *EXAMPLES.values()]
        for path in FIXTURES.glob(pattern)
    }
    stored = {p for p in FIXTURES.rglob("*.json") if p.parent != SCHEMAS}
    assert sorted(str(p.relative_to(FIXTURES)) for p in stored - checked) == []


def test_the_checks_report_a_field_renamed_or_retyped() -> None:
    """The mistakes the hand-written responses had: PagerDuty's ``incident_number`` as a
    string, GitLab's compare commits without their ``created_at``."""
    incidents = _load(FIXTURES / "pagerduty/incidents_page1.json")
    incidents["incidents"][0]["incident_number"] = "1234"
    assert schema_errors("pagerduty-list-incidents", incidents) == [
        "/incidents/0/incident_number: '1234' is not of type 'integer'"
    ]
    compare = _load(FIXTURES / "gitlab/compare_11_13.json")
    compare["commits"][0]["committed_date"] = compare["commits"][0].pop("created_at")
    example = _load(SCHEMAS / "gitlab-compare.example.json")["value"]
    assert unlike_example(example, compare) == ["/commits/0/created_at: missing"]
