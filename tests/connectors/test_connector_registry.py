"""Connectors are extensions of kind ``connector`` in the one registry: the built-ins are the
modules of conveyor.connectors, plug-ins come through the entry-point group
``conveyor.connectors``, and each states its options as a pydantic model."""

from __future__ import annotations

from conveyor.connectors.base import ConnectorOptions, Source
from conveyor.extensions import Kind, load


def test_the_built_in_connectors_are_registered_with_their_options() -> None:
    registry = load(plugins=False)
    assert registry.names(Kind.CONNECTOR) == ["github", "gitlab", "argocd", "pagerduty", "opsgenie"]
    assert Kind.CONNECTOR.entry_point_group == "conveyor.connectors"
    required = {
        name: sorted(ext.options.model_json_schema().get("required", []))
        for name, ext in registry.of(Kind.CONNECTOR).items()
    }
    assert required == {
        "github": ["repository", "service"],
        "gitlab": ["project", "service"],
        "argocd": ["api_url", "application", "environment", "service"],
        "pagerduty": ["services"],
        "opsgenie": ["service"],
    }
    for extension in registry.of(Kind.CONNECTOR).values():
        assert issubclass(extension.options, ConnectorOptions)
        assert isinstance(extension.implementation, Source)
        assert "token_secret" in extension.options.model_fields
