"""Conveyor's own settings: every ``CONVEYOR_*`` variable that configures the server, the CLI,
a runner agent or the edge, read once where a process starts (``Settings.from_env``) and
handed down from there.

A leaf: it imports no part of Conveyor but ``conveyor.errors``, and nothing outside the standard
library: a frozen dataclass, not a pydantic model, because every CLI command reads its settings
and importing pydantic would cost a command that only asks a server a third of its start-up.
The variables Conveyor sets *for* jobs and deploy commands (``CONVEYOR_SHA``,
``CONVEYOR_RELEASE``...) are not settings and are not here (``JOB_VARIABLES``). The settings
table of docs/operations.md is rendered from this class (``markdown_table``; a test keeps them
equal).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from conveyor.errors import ConveyorError

__all__ = ["JOB_VARIABLES", "PREFIX", "Settings", "SettingsError", "markdown_table"]

PREFIX = "CONVEYOR_"

# Variables Conveyor sets for the commands it runs (steps, deploy commands, checks, hooks) or
# for its own helper processes: never read as settings.
JOB_VARIABLES = frozenset(
    {
        "CONVEYOR_ATTEMPT",
        "CONVEYOR_BRANCH",
        "CONVEYOR_DATA_DIR",
        "CONVEYOR_DEPLOY_URL",
        "CONVEYOR_ENVIRONMENT",
        "CONVEYOR_HOST",
        "CONVEYOR_IMAGE",
        "CONVEYOR_IMAGES",
        "CONVEYOR_JOB",
        "CONVEYOR_PREVIOUS_RELEASE",
        "CONVEYOR_REF",
        "CONVEYOR_REGISTRY",
        "CONVEYOR_RELEASE",
        "CONVEYOR_RELEASE_DIR",
        "CONVEYOR_RELEASE_ID",
        "CONVEYOR_RUN_ID",
        "CONVEYOR_SERVICE",
        "CONVEYOR_SHA",
        "CONVEYOR_SHORT_SHA",
        "CONVEYOR_STEP",
        "CONVEYOR_STEP_ATTEMPT",
        "CONVEYOR_TIER",
        "CONVEYOR_WORKSPACE",
    }
)

_KIB = 1024
# Sizes as the sandbox limits take them (k, m, g, t are binary) ...
_LIMIT_UNITS: dict[str, float] = {
    "": 1,
    "b": 1,
    "k": _KIB,
    "kb": 1000,
    "kib": _KIB,
    "m": _KIB**2,
    "mb": 1000**2,
    "mib": _KIB**2,
    "g": _KIB**3,
    "gb": 1000**3,
    "gib": _KIB**3,
    "t": _KIB**4,
    "tb": 1000**4,
    "tib": _KIB**4,
}
# ... and as the log ceilings take them (conveyor.spec.durations.parse_size: what conveyor.yml's
# log limits accept).
_LOG_UNITS: dict[str, float] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": _KIB,
    "mib": _KIB**2,
    "gib": _KIB**3,
}
_TIME_UNITS: dict[str, float] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class SettingsError(ConveyorError):
    """A ``CONVEYOR_*`` setting has a value Conveyor cannot use; the message names it."""


# --- parsers: the text of one variable (stripped, not empty) to its value -----------------------
# Each raises ValueError with what the value must be ("a number of seconds above 0").


def _text(text: str) -> str:
    return text


def _path(text: str) -> Path:
    return Path(text)


def _items(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _number(what: str, low: float, high: float, *, high_included: bool = True) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(what) from None
        if not (low < value <= high if high_included else low < value < high):
            raise ValueError(what)
        return value

    return parse


def _whole(what: str, low: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise ValueError(what)
        return int(text)

    return parse


def _quantity(what: str, units: Mapping[str, float], whole: bool = True) -> Any:
    def parse(text: str) -> float | int:
        match = _QUANTITY.fullmatch(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in units:
            raise ValueError(what)
        value = float(match.group(1)) * units[unit]
        if not math.isfinite(value) or value < 1:
            raise ValueError(f"{what} of at least 1")
        return int(value) if whole else value

    return parse


def _days(text: str) -> float | None:
    """``30``, ``30d`` or ``12h``; ``0``: kept for good (None)."""
    if text.lower() in ("0", "0d", "0h"):
        return None
    number, unit = text.lower(), 1.0
    if number[-1] in "dh":
        number, unit = number[:-1], 1.0 if number[-1] == "d" else 1 / 24
    try:
        days = float(number) * unit
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise ValueError("a number of days such as 30 or 30d, or hours such as 12h")
    return days


def _choice(*allowed: str, aliases: Mapping[str, str] | None = None) -> Any:
    def parse(text: str) -> str:
        value = text.lower()
        value = (aliases or {}).get(value, value)
        if value not in allowed:
            raise ValueError(" or ".join(allowed))
        return value

    return parse


def _label(text: str) -> str:
    if not _LABEL_NAME.match(text):
        raise ValueError("a Prometheus label name such as service, app or job")
    return text


def _field(
    default: Any,
    description: str,
    used_by: str,
    parse: Callable[[str], Any] = _text,
    *,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={
            "description": description,
            "used_by": used_by,
            "shown": shown,
            "parse": parse,
        },
    )


def _amount(
    description: str, used_by: str, what: str, units: Mapping[str, float], shown: str
) -> Any:
    """A size or time setting whose default is ``shown`` read as a user would write it, so the
    default and the way the docs show it cannot disagree."""
    # A time keeps its fraction of a second; sizes are whole bytes.
    parse = _quantity(what, units, whole=units is not _TIME_UNITS)
    return _field(parse(shown), description, used_by, parse, shown=shown)


_SERVER = "the server"
_RUNNERS = "runners, the server"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the server, the CLI, runner agents and the edge. Each field ``name`` is
    read from ``CONVEYOR_<NAME>``; unset or empty: the default."""

    # --- where the data is, whom the CLI talks to --------------------------------------------
    home: Path | None = _field(
        None,
        "the data directory",
        "every command",
        _path,
        shown="`.conveyor/` at the top of the repository",
    )
    database_url: str | None = _field(
        None,
        "a SQLAlchemy URL instead of `CONVEYOR_HOME/conveyor.db`",
        "every command",
        secret=True,
    )
    url: str | None = _field(
        None,
        "talk to this server instead of the local data directory",
        "the CLI, `hook install`, `runner`",
    )
    token: str | None = _field(
        None,
        "the API token sent with `CONVEYOR_URL`",
        "the CLI, `hook install`, `runner`",
        secret=True,
    )
    user: str | None = _field(
        None,
        "who decides and acts in embedded `approve`, `reject`, `secret`, `import`",
        "the CLI",
        shown="your login name",
    )
    secrets_key_file: Path | None = _field(
        None,
        "the key file that encrypts secrets",
        "the server, `secret`, `run`, `service add`",
        _path,
        shown="`CONVEYOR_HOME/secrets.key`",
    )
    secrets_file: Path | None = _field(
        None,
        "an old plain-text secrets file, reported at start so its secrets are imported",
        "the server, `run`, `runner`",
        _path,
        shown="`CONVEYOR_HOME/secrets.env`",
    )
    users_file: Path | None = _field(
        None,
        "the users file",
        _SERVER,
        _path,
        shown="`CONVEYOR_HOME/users.yml`",
    )
    connectors_file: Path | None = _field(
        None,
        "the connectors file: deployments and incidents pulled from other tools",
        "the server, `connectors`",
        _path,
        shown="`CONVEYOR_HOME/connectors.yml`",
    )
    # --- the server ------------------------------------------------------------------------------
    base_url: str | None = _field(
        None, "its external URL, for links and the CDEvents `source`", _SERVER
    )
    metrics_token: str | None = _field(
        None, "require this bearer token on `/metrics`", _SERVER, secret=True
    )
    prometheus_url: str | None = _field(
        None, "the default Prometheus of `health.prometheus` (`--prometheus-url`)", _SERVER
    )
    cdevents_sinks: tuple[str, ...] = _field(
        (), "comma-separated CDEvents sinks (`--cdevents-sink`)", _SERVER, _items, shown="none"
    )
    body_limits: tuple[str, ...] = _field(
        (),
        "comma-separated `KIND=SIZE` request body limits (`--body-limit`)",
        _SERVER,
        _items,
        shown="see [the server](#the-server)",
    )
    forwarded_allow_ips: str | None = _field(
        None,
        "the proxies whose `X-Forwarded-For` is believed (`--forwarded-allow-ips`)",
        _SERVER,
        shown="nobody",
    )
    max_connections: int = _field(
        1000,
        "open client connections at most (`--max-connections`)",
        _SERVER,
        _whole("a whole number of connections, at least 1", 1),
    )
    edge: Literal["detached", "embedded"] = _field(
        "detached",
        "who holds the environments' stable ports: `conveyor edge` or the server (`--edge`)",
        _SERVER,
        _choice("detached", "embedded"),
    )
    alert_service_label: str = _field(
        "service", "the alert label naming the service", _SERVER, _label
    )
    attribution_hours: float = _field(
        48.0,
        "the incident attribution window in hours; `dora --attribution-window` sets it for one "
        "report",
        "the server, `dora`",
        _number("a number of hours greater than 0", 0, 24 * 366 * 10, high_included=False),
    )
    slack_signing_secret: str | None = _field(
        None, "verifies Slack's approval button requests", _SERVER, secret=True
    )
    slack_webhook: str | None = _field(
        None, "a Slack incoming webhook the demo posts to", "`demo`", secret=True
    )
    smtp_url: str | None = _field(
        None, "the SMTP server of email notifications", _SERVER, secret=True
    )
    mail_from: str | None = _field(None, "the sender of email notifications", _SERVER)
    lease_seconds: float = _field(
        30.0,
        "how long a job's lease lasts without a heartbeat",
        "the server, `run`",
        _number("a number of seconds above 0 (at most 86400)", 0, 86400),
    )
    keep_bundles: int = _field(
        5,
        "release bundles kept per service beyond those an environment serves or may roll back to",
        "the server, `db prune`",
        _whole("a whole number of releases", 0),
    )
    log_store_limit: int = _amount(
        "the most log the store keeps, all runs together; oldest finished runs' logs go first",
        "the server, `db prune`",
        "a size such as 8GiB or 500MiB",
        _LOG_UNITS,
        "8GiB",
    )
    log_retention: float | None = _field(
        None,
        "days a finished run keeps its logs (`30`, `30d`, `12h`)",
        "the server, `db prune`",
        _days,
        shown="kept",
    )
    artifact_retention: float | None = _field(
        None,
        "days a finished run keeps its artifact files (`30`, `30d`, `12h`)",
        "the server, `db prune`",
        _days,
        shown="kept",
    )
    # --- where pipeline code runs ------------------------------------------------------------
    container_engine: str | None = _field(
        None, "the command that runs `image:` jobs", "runners", shown="podman, else docker"
    )
    sandbox: Literal["bubblewrap", "off"] = _field(
        "bubblewrap",
        "`off` runs pipeline code unsandboxed (as `--unsafe-no-sandbox`)",
        "the server, `runner`, `run`, `demo`",
        _choice("bubblewrap", "off", aliases={"on": "bubblewrap"}),
    )
    job_path: str | None = _field(
        None, "the `PATH` that steps and deploy commands get", _RUNNERS, shown="the system's"
    )
    limit_memory: int = _amount(
        "memory of one sandboxed command and all it starts",
        _RUNNERS,
        "a size such as 16G or 500M",
        _LIMIT_UNITS,
        "16G",
    )
    limit_processes: int = _field(
        4096,
        "processes and threads of one sandboxed command",
        _RUNNERS,
        _quantity("a whole number of processes", {"": 1}),
    )
    limit_file_size: int = _amount(
        "the largest file pipeline code may write",
        _RUNNERS,
        "a size such as 8G or 500M",
        _LIMIT_UNITS,
        "8G",
    )
    limit_tmp: int = _amount(
        "a sandboxed command's private `/tmp` and `/dev/shm`",
        _RUNNERS,
        "a size such as 1G or 500M",
        _LIMIT_UNITS,
        "1G",
    )
    limit_job_time: float = _amount(
        "the longest a job may run", _RUNNERS, "a time such as 6h, 30m or 90s", _TIME_UNITS, "6h"
    )
    limit_log: int = _amount(
        "the most output kept of one step; a pipeline cannot raise it",
        _RUNNERS,
        "a size such as 256M or 1G",
        _LIMIT_UNITS,
        "256M",
    )
    limit_job_log: int = _amount(
        "the most output kept of one job, all steps; a pipeline cannot raise it",
        _RUNNERS,
        "a size such as 1GiB or 500MiB",
        _LOG_UNITS,
        "1GiB",
    )
    cgroup: str = _field(
        "",
        "where each sandboxed command gets its control group: empty finds this process's "
        "cgroup v1 memory and pids hierarchies; on cgroup v2, a folder delegated with "
        "`+memory +pids`; `off` for per-process limits only",
        _RUNNERS,
        shown="empty",
    )

    @staticmethod
    def variable(name: str) -> str:
        """The environment variable of field ``name``."""
        return PREFIX + name.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default: this process's environment). Raises
        SettingsError naming the variable when one has a value that cannot be used."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for info in dataclasses.fields(cls):
            name = info.name
            variable = cls.variable(name)
            text = environ.get(variable, "").strip()
            if not text:
                continue
            try:
                values[name] = info.metadata["parse"](text)
            except ValueError as exc:
                raise SettingsError(
                    f"{variable} must be {exc}, got {text!r}",
                    hint=f"unset, it is {_shown_default(name).strip('`')}",
                ) from None
        return cls(**values)

    @classmethod
    def names(cls) -> list[str]:
        """The fields' names, in the order of the docs' table."""
        return [info.name for info in dataclasses.fields(cls)]

    @classmethod
    def default(cls, name: str) -> Any:
        """The value of field ``name`` when its variable is unset."""
        return _fields()[name].default


def _fields() -> dict[str, dataclasses.Field[Any]]:
    return {info.name: info for info in dataclasses.fields(Settings)}


def _shown_default(name: str) -> str:
    info = _fields()[name]
    shown = info.metadata["shown"]
    if shown:
        return str(shown)
    default = info.default
    if default is None or default in ((), ""):
        return "unset"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def markdown_table() -> str:
    """The settings table of docs/operations.md, one row per field of Settings."""
    lines = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    for name, info in _fields().items():
        lines.append(
            f"| `{Settings.variable(name)}` | {info.metadata['used_by']} | "
            f"{_shown_default(name)} | {info.metadata['description']} |"
        )
    return "\n".join(lines) + "\n"


TABLE_START = "<!-- settings: generated from conveyor/settings.py; python -m conveyor.settings -->"
TABLE_END = "<!-- end of settings -->"


def with_table(doc: str) -> str:
    """``doc`` (docs/operations.md) with the text between TABLE_START and TABLE_END replaced
    by ``markdown_table()``."""
    start, end = doc.index(TABLE_START) + len(TABLE_START), doc.index(TABLE_END)
    return f"{doc[:start]}\n{markdown_table()}{doc[end:]}"


if __name__ == "__main__":  # pragma: no cover - rewrites the docs' table
    import sys

    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/operations.md")
    doc.write_text(with_table(doc.read_text(encoding="utf-8")), encoding="utf-8")
