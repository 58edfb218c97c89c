"""conveyor.settings: every CONVEYOR_* setting parsed once, with one clear message for a bad
value; the docs' table generated from it; and no other module reading a setting itself."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from conveyor.errors import ConveyorError
from conveyor.settings import JOB_VARIABLES, PREFIX, Settings, SettingsError, with_table

SRC = Path(__file__).parents[1] / "src" / "conveyor"
OPERATIONS = Path(__file__).parents[1] / "docs" / "operations.md"


def test_defaults_when_nothing_is_set() -> None:
    s = Settings.from_env({})
    assert s.lease_seconds == 30.0
    assert s.keep_bundles == 5
    assert s.attribution_hours == 48.0
    assert s.alert_service_label == "service"
    assert s.log_store_limit == 8 * 2**30
    assert s.limit_memory == 16 * 2**30
    assert s.limit_job_log == 2**30
    assert s.limit_job_time == 6 * 3600
    assert s.max_connections == 1000
    assert s.edge == "detached"
    assert s.sandbox == "bubblewrap"
    assert (s.home, s.url, s.token, s.log_retention, s.cgroup) == (None, None, None, None, "")
    assert s == Settings()


def test_values_are_parsed_and_empty_means_unset() -> None:
    s = Settings.from_env(
        {
            "CONVEYOR_LEASE_SECONDS": " 2.5 ",
            "CONVEYOR_HOME": "/srv/conveyor",
            "CONVEYOR_CDEVENTS_SINKS": "http://a, ,http://b",
            "CONVEYOR_LIMIT_MEMORY": "2G",
            "CONVEYOR_LIMIT_JOB_TIME": "30m",
            "CONVEYOR_LOG_STORE_LIMIT": "500MiB",
            "CONVEYOR_LOG_RETENTION": "12h",
            "CONVEYOR_ARTIFACT_RETENTION": "0",
            "CONVEYOR_SANDBOX": "OFF",
            "CONVEYOR_KEEP_BUNDLES": "0",
            "CONVEYOR_URL": "",
            "CONVEYOR_SHA": "abc",  # a job's variable: no setting, ignored
        }
    )
    assert s.lease_seconds == 2.5
    assert s.home == Path("/srv/conveyor")
    assert s.cdevents_sinks == ("http://a", "http://b")
    assert s.limit_memory == 2 * 2**30
    assert s.limit_job_time == 1800.0
    assert s.log_store_limit == 500 * 2**20
    assert s.log_retention == 0.5
    assert s.artifact_retention is None
    assert s.sandbox == "off"
    assert s.keep_bundles == 0
    assert s.url is None


def test_settings_are_frozen_and_hide_secrets() -> None:
    s = Settings.from_env({"CONVEYOR_TOKEN": "t0ps3cret", "CONVEYOR_METRICS_TOKEN": "m3trics"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lease_seconds = 1.0  # type: ignore[misc]
    assert "t0ps3cret" not in repr(s)
    assert "m3trics" not in repr(s)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONVEYOR_LEASE_SECONDS", "x", "CONVEYOR_LEASE_SECONDS must be a number of seconds"),
        ("CONVEYOR_LEASE_SECONDS", "0", "CONVEYOR_LEASE_SECONDS must be a number of seconds"),
        ("CONVEYOR_KEEP_BUNDLES", "-1", "CONVEYOR_KEEP_BUNDLES must be a whole number"),
        ("CONVEYOR_ATTRIBUTION_HOURS", "soon", "CONVEYOR_ATTRIBUTION_HOURS must be a number"),
        ("CONVEYOR_ALERT_SERVICE_LABEL", "a-b", "CONVEYOR_ALERT_SERVICE_LABEL must be a Prom"),
        ("CONVEYOR_LIMIT_MEMORY", "lots", "CONVEYOR_LIMIT_MEMORY must be a size"),
        ("CONVEYOR_LIMIT_PROCESSES", "0", "CONVEYOR_LIMIT_PROCESSES must be a whole number"),
        ("CONVEYOR_LOG_STORE_LIMIT", "8 furlongs", "CONVEYOR_LOG_STORE_LIMIT must be a size"),
        ("CONVEYOR_LOG_RETENTION", "a week", "CONVEYOR_LOG_RETENTION must be a number of days"),
        ("CONVEYOR_SANDBOX", "maybe", "CONVEYOR_SANDBOX must be bubblewrap or off"),
        ("CONVEYOR_EDGE", "both", "CONVEYOR_EDGE must be detached or embedded"),
        ("CONVEYOR_MAX_CONNECTIONS", "many", "CONVEYOR_MAX_CONNECTIONS must be a whole number"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert isinstance(caught.value, ConveyorError)
    assert caught.value.message.startswith(message)
    assert caught.value.message.endswith(f"got {value!r}")
    assert str(caught.value).endswith("\n  hint: " + (caught.value.hint or "?"))
    assert (caught.value.hint or "").startswith("unset, it is ")


def test_the_docs_table_is_generated_from_the_model() -> None:
    doc = OPERATIONS.read_text(encoding="utf-8")
    assert doc == with_table(doc), (
        "regenerate it: .venv/bin/python -m conveyor.settings docs/operations.md"
    )


def test_no_setting_is_also_a_job_variable() -> None:
    names = {Settings.variable(name) for name in Settings.names()}
    assert not names & JOB_VARIABLES


# --- nothing else reads a setting -------------------------------------------------------------

SETTINGS = {Settings.variable(name) for name in Settings.names()}


def _setting_reads(path: Path, root: Path = SRC.parent) -> list[str]:
    """Lines of ``path`` that read a setting's variable from a mapping or an environment:
    ``x.get("CONVEYOR_…")``, ``x["CONVEYOR_…"]``, ``os.getenv(…)``, click's ``envvar=``, also
    through a module constant (``SETTING = "CONVEYOR_…"``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def setting(node: ast.AST | None) -> bool:
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(node, ast.Name):
            value = constants.get(node.id)
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return False
        prefix = value.endswith("_") and value != PREFIX  # CONVEYOR_LIMIT_
        return value not in JOB_VARIABLES and (value in SETTINGS or prefix)

    found = []
    for node in ast.walk(tree):
        read = False
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("get", "getenv", "pop") and node.args:
                read = setting(node.args[0])
            read = read or any(k.arg == "envvar" and setting(k.value) for k in node.keywords)
            # A prefix (CONVEYOR_LIMIT_) picks settings out of an environment.
            read = read or (name == "startswith" and bool(node.args) and setting(node.args[0]))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            read = setting(node.slice)
        if read:
            found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}")
    return found


def test_only_the_settings_module_reads_settings() -> None:
    reads = [
        line
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "settings.py" or path.parent != SRC
        if "sample" not in path.relative_to(SRC).parts
        for line in _setting_reads(path)
    ]
    assert reads == [], "read it from conveyor.settings.Settings, handed down from the start"


def test_the_check_finds_a_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import os\nV = "CONVEYOR_LEASE_SECONDS"\nos.environ.get(V)\n'
        'os.environ["CONVEYOR_HOME"]\nos.environ.get("CONVEYOR_SHA")\nenv["CONVEYOR_HOME"] = "x"\n',
        encoding="utf-8",
    )
    assert _setting_reads(sample, tmp_path) == ["sample.py:3", "sample.py:4"]


def test_a_command_shows_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.cli.main import main

    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "x")
    with pytest.raises(SystemExit) as exited:
        main(["runs"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "error: CONVEYOR_LEASE_SECONDS must be a number of seconds above 0 (at most 86400), got 'x'"
    )
    assert "Traceback" not in err


def test_a_server_refuses_to_start_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from conveyor.server.app import create_app
    from conveyor.store.db import Settings as Where
    from conveyor.store.db import open_store

    home = tmp_path / "home"
    store = open_store(Where(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    try:
        monkeypatch.setenv("CONVEYOR_KEEP_BUNDLES", "many")
        with pytest.raises(SettingsError, match="CONVEYOR_KEEP_BUNDLES must be a whole number"):
            create_app(store)
    finally:
        store.close()
