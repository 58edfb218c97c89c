"""The event catalog (conveyor.events) is the only place event names are defined: every type
written to the log and every notice name anywhere in the sources is one of its members, every
state a deployment or approval can reach has its event, and the readers (hub, SSE stream,
/metrics, CDEvents, notify.on) name members only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import conveyor
from conveyor.deploy_states import (
    DEPLOYMENT_OPEN,
    DEPLOYMENT_TERMINAL,
    ApprovalStatus,
    DeploymentStatus,
)
from conveyor.events import (
    DEFAULT_NOTICE_EVENTS,
    LEGACY_EVENT_TYPES,
    NOTICE_OF_EVENT,
    NOTICE_TITLES,
    EventType,
    NoticeEvent,
    approval_event,
    deployment_event,
    event_type,
    types_of,
)

SRC = Path(conveyor.__file__).parent
FAMILIES = sorted({t.family for t in EventType} | {n.value.partition(".")[0] for n in NoticeEvent})
EVENT_NAME = re.compile(rf"^({'|'.join(FAMILIES)})\.[a-z_]+$")
KNOWN = {t.value for t in EventType} | {n.value for n in NoticeEvent}
# Text that looks like an event name and is not one of Conveyor's: CDEvents' own type names
# (read from imported files) and Slack's payload keys.
NOT_EVENTS = {
    "metrics/import_cdevents.py": {
        "service.deployed",
        "service.upgraded",
        "service.rolledback",
        "incident.detected",
        "incident.reported",
    },
    "notify/slack.py": {"user.id", "user.username"},
}
# Emitters whose first argument is computed: (module, the expression).
COMPUTED_EMITS = {
    ("engine/runs.py", "kind"),  # a taskrun.* member chosen by the job's new status
    ("engine/job_reports.py", "type_"),  # its _emit helper passes its caller's literal on
    ("engine/incidents.py", "type_"),  # emit_about: an EventType member its callers name
    ("engine/promotion.py", "deployment_event(status)"),
    ("engine/promotion.py", "approval_event(status)"),
}


def modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(SRC).as_posix(), ast.parse(path.read_text()))
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "events.py" or path.parent != SRC
    ]


def test_every_event_name_in_the_sources_is_in_the_catalog() -> None:
    unknown = [
        f"{name}:{node.lineno}: {node.value}"
        for name, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and EVENT_NAME.match(node.value)
        and node.value not in KNOWN
        and node.value not in NOT_EVENTS.get(name, set())
    ]
    assert unknown == []


def test_every_type_emitted_is_a_member_or_a_catalog_spelling() -> None:
    """Writer.emit and the runner's _emit: a member (EventType.X), one of the catalog's
    helpers, or (in modules not converted yet) text the catalog holds."""
    found: list[str] = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "emit" and node.args:
                first = node.args[0]
            elif node.func.attr == "_emit" and len(node.args) > 1:
                first = node.args[1]
            else:
                continue
            candidates = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for arg in candidates:
                if isinstance(arg, ast.Constant):
                    ok = arg.value in {t.value for t in EventType}
                elif isinstance(arg, ast.Attribute):
                    ok = isinstance(arg.value, ast.Name) and arg.value.id == "EventType"
                    ok = ok and arg.attr in EventType.__members__
                else:
                    ok = (name, ast.unparse(arg)) in COMPUTED_EMITS
                if not ok:
                    found.append(f"{name}:{node.lineno}: {ast.unparse(arg)}")
    assert found == []


def test_the_emitters_counted_are_still_there() -> None:
    """COMPUTED_EMITS lists real call sites (a stale entry would hide a new one)."""
    seen = {
        (name, ast.unparse(node.args[0] if node.func.attr == "emit" else node.args[1]))
        for name, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("emit", "_emit")
        and len(node.args) > (0 if node.func.attr == "emit" else 1)
    }
    assert seen >= COMPUTED_EMITS


def test_the_web_ui_names_only_catalog_events() -> None:
    pattern = re.compile(rf"""['"](({"|".join(FAMILIES)})\.[a-z_]+)['"]""")
    names = {
        m.group(1)
        for js in (SRC / "web" / "static").rglob("*.js")
        for m in pattern.finditer(js.read_text())
    }
    assert names <= KNOWN


@pytest.mark.parametrize("status", list(DeploymentStatus))
def test_every_deployment_status_has_its_event(status: DeploymentStatus) -> None:
    assert deployment_event(status) == f"deployment.{status.value}"


@pytest.mark.parametrize("status", [s for s in ApprovalStatus if s.terminal])
def test_every_way_an_approval_closes_has_its_event(status: ApprovalStatus) -> None:
    assert approval_event(status) == f"approval.{status.value}"


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"deployment\.exploded"):
        event_type("deployment.exploded")
    with pytest.raises(ValueError, match="not a valid EventType"):
        deployment_event("exploded")


def test_one_spelling_per_vocabulary() -> None:
    """`deployment.rolled_back` (the log: a failed deployment ended rolled back) and
    `deployment.rolledback` (the notice: the environment is back on an earlier release) are
    one name in each vocabulary, not two spellings of one."""
    assert EventType.DEPLOYMENT_ROLLED_BACK == "deployment.rolled_back"
    assert NoticeEvent.DEPLOYMENT_ROLLEDBACK == "deployment.rolledback"
    assert "deployment.rolledback" not in {t.value for t in EventType}
    assert "deployment.rolled_back" not in {n.value for n in NoticeEvent}
    assert len({t.value for t in EventType}) == len(EventType)
    assert len({n.value for n in NoticeEvent}) == len(NoticeEvent)


def test_legacy_spellings_map_to_current_members() -> None:
    for old, current in LEGACY_EVENT_TYPES.items():
        assert old not in {t.value for t in EventType}, f"{old} is current, not legacy"
        assert event_type(old) is current
    for current_type in EventType:
        assert event_type(current_type.value) is current_type


def test_a_legacy_spelling_is_read_as_its_member(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a rename would keep stored rows readable (the log is append-only)."""
    from conveyor import events

    legacy = {"deployment.rolledback": EventType.DEPLOYMENT_ROLLED_BACK}
    monkeypatch.setattr(events, "LEGACY_EVENT_TYPES", legacy)
    assert events.event_type("deployment.rolledback") is EventType.DEPLOYMENT_ROLLED_BACK


def test_every_notice_has_a_title_and_its_log_event() -> None:
    assert set(NOTICE_TITLES) == set(NoticeEvent)
    assert set(NOTICE_OF_EVENT) == set(NoticeEvent)
    assert set(DEFAULT_NOTICE_EVENTS) <= set(NoticeEvent)


def test_notify_on_accepts_exactly_the_notice_names() -> None:
    from conveyor.spec.fields import DEFAULT_NOTIFY_EVENTS, NOTIFY_EVENTS

    assert tuple(n.value for n in NoticeEvent) == NOTIFY_EVENTS
    assert [n.value for n in DEFAULT_NOTICE_EVENTS] == DEFAULT_NOTIFY_EVENTS


def test_the_readers_name_catalog_types() -> None:
    from conveyor.delivery import cdevents
    from conveyor.metrics import exposition
    from conveyor.server import hub, stream

    for kinds in hub.CHANNELS.values():
        assert all(isinstance(k, EventType) for k in kinds)
    for kinds in stream.CHANNELS.values():
        assert kinds
        assert all(isinstance(k, EventType) for k in kinds)
    assert all(isinstance(t, EventType) for t in exposition.EVENT_TYPES)
    assert all(isinstance(t, EventType) for t in cdevents.MAPPED)


def test_families() -> None:
    assert types_of("approval") == {t for t in EventType if t.value.startswith("approval.")}
    assert EventType.DEPLOYMENT_FAILED.family == "deployment"
    assert EventType.DEPLOYMENT_FAILED.action == "failed"


def test_open_deployments_are_the_non_terminal_statuses() -> None:
    from conveyor.metrics import exposition

    assert {s for s in DeploymentStatus if not s.terminal} == DEPLOYMENT_OPEN
    assert DEPLOYMENT_OPEN.isdisjoint(DEPLOYMENT_TERMINAL)
    assert exposition.DEPLOYMENT_OPEN is DEPLOYMENT_OPEN
