"""The web UI: a no-build ES-module app over the public API (docs/decisions/0008-web-ui.md)."""
