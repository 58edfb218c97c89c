"""A DORA report's query as `conveyor dora` and GET /api/v1/dora name it, from the names their
Python code gives the options. Its own module: the CLI imports it before knowing whether the
report comes from a server, and metrics.dora_options (the parsing) costs a command's start-up
more than this does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# `conveyor dora`'s --from and --to as Python code names them (``from`` is a keyword).
_PYTHON_NAMES = {"start": "from", "end": "to"}


def params_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The query of a report (what from_params reads) from `conveyor dora`'s options, or
    GET /api/v1/dora's parameters, under the names Python code gives them."""
    return {_PYTHON_NAMES.get(name, name): value for name, value in options.items()}
