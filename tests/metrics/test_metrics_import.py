"""History import (`conveyor import FILE`, POST /api/v1/import): native records and CDEvents
become deployment facts, changes and incidents; all or nothing; importing twice changes nothing.

Everything runs against a real store, real git repositories and the real `conveyor` command."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.metrics.imports import ImportFailed, import_history, parse
from conveyor.server.limits import BodyLimits
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import (
    ChangeFactRow,
    Deployment,
    DeploymentFactRow,
    Event,
    Incident,
    Release,
    Run,
    Service,
)
from tests.conftest import Conveyor, GitRepo
from tests.server.conftest import Api, Serve, serve  # noqa: F401 (the fixture, for this module)
from tests.serverproc import ServerProcess

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)


def at(hours: float) -> str:
    return (T0 + dt.timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def sha(n: int) -> str:
    return f"{n:040x}"


def deployment(
    id: str, start: float, *, status: str = "succeeded", commits: Any = (), **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "deployment",
        "service": "shop",
        "environment": "production",
        "id": id,
        "commit": sha(1000 + int(start * 10)),
        "started_at": at(start),
        "finished_at": at(start + 0.25),
        "status": status,
    }
    if commits is not None:
        record["commits"] = [
            {"sha": sha(n), "committed_at": at(start - hours)} for n, hours in commits
        ]
    return record | extra


def incident(id: str, opened: float, resolved: float | None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "incident", "service": "shop", "id": id}
    record["opened_at"] = at(opened)
    if resolved is not None:
        record["resolved_at"] = at(resolved)
    return record | extra


def jsonl(*records: dict[str, Any] | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    """A new store on SQLite, and on PostgreSQL (tests marked postgres)."""
    s = open_store(Settings(home=tmp_path / "store", database_url=database_url))
    yield s
    s.close()


def store_of(conveyor: Conveyor) -> Store:
    home = conveyor.home
    return open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))


def counts(store: Store) -> dict[str, int]:
    with store.session() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (DeploymentFactRow, ChangeFactRow, Incident, Service, Event)
        }


def facts(store: Store) -> dict[str, DeploymentFactRow]:
    with store.session() as session:
        return {f.key: f for f in session.scalars(select(DeploymentFactRow))}


def changes(store: Store, key: str) -> list[str]:
    with store.session() as session:
        return sorted(
            session.scalars(
                select(ChangeFactRow.sha)
                .join(DeploymentFactRow, DeploymentFactRow.id == ChangeFactRow.fact_id)
                .where(DeploymentFactRow.key == key)
            )
        )


def incidents(store: Store) -> dict[str, Incident]:
    with store.session() as session:
        return {i.external_id or "": i for i in session.scalars(select(Incident))}


# --- a good file, twice -----------------------------------------------------------------------

HISTORY = jsonl(
    "# shop's production history, exported from the old pipeline",
    "",
    deployment("d1", 0, commits=[(1, 5), (2, 3)]),
    # Failed: its commit goes to the next successful deployment (d3).
    deployment("d2", 24, status="failed", commits=[(3, 2)], failed_at=at(24.2)),
    deployment("d3", 48, commits=[(4, 1)], tier="production"),
    deployment("r1", 49, commits=None, kind_of="rollback", rollback_of="d3"),
    deployment("s1", 50, environment="staging", commits=[(5, 1)]),
    incident("inc-1", 48.5, 49.5, deployment="d3", title="checkout errors"),
    incident("inc-2", 60, None),
)


def test_a_history_is_imported_once_and_again_changes_nothing(conveyor: Conveyor) -> None:
    history = conveyor.cwd.parent / "history.jsonl"
    history.write_text(HISTORY, encoding="utf-8")
    first = conveyor("import", str(history), "--json", check=True).json()
    assert first["records"] == 7
    assert first["deployments"] == {"added": 5, "present": 0, "changes_added": 5}
    assert first["incidents"] == {"added": 2, "present": 0, "resolved": 0}

    store = store_of(conveyor)
    try:
        found = facts(store)
        assert sorted(found) == ["i:shop:d1", "i:shop:d2", "i:shop:d3", "i:shop:r1", "i:shop:s1"]
        d2, d3, r1, s1 = (found[f"i:shop:{k}"] for k in ("d2", "d3", "r1", "s1"))
        assert (d2.result, d2.failed_at) == ("failed", T0 + dt.timedelta(hours=24.2))
        assert (r1.kind, r1.rollback_of) == ("rollback", "i:shop:d3")
        assert (d3.kind, d3.result, d3.failed_at) == ("deploy", "succeeded", None)
        assert (s1.environment, s1.tier, found["i:shop:d1"].tier) == (
            "staging",
            "staging",
            "production",
        )
        assert all(f.source == "import" for f in found.values())
        assert changes(store, "i:shop:d1") == [sha(1), sha(2)]
        assert changes(store, "i:shop:d2") == []  # failed: no lead time of its own
        assert changes(store, "i:shop:d3") == [sha(3), sha(4)]  # d2's commit came with d3
        assert changes(store, "i:shop:r1") == []
        with store.session() as session:
            [c1] = session.scalars(select(ChangeFactRow).where(ChangeFactRow.sha == sha(1)))
            assert c1.committed_at == T0 - dt.timedelta(hours=5)
        found_incidents = incidents(store)
        inc1, inc2 = found_incidents["shop:inc-1"], found_incidents["shop:inc-2"]
        assert (inc1.status, inc1.title, inc1.environment) == (
            "resolved",
            "checkout errors",
            "production",
        )
        assert (inc1.data, inc1.deployment_key) == ({}, "i:shop:d3")
        assert inc1.deployment_id is None  # not one of Conveyor's own deployments
        assert (inc1.opened_at, inc1.resolved_at) == (
            T0 + dt.timedelta(hours=48.5),
            T0 + dt.timedelta(hours=49.5),
        )
        assert (inc2.status, inc2.resolved_at, inc2.data) == ("open", None, {})
        before = counts(store)
    finally:
        store.close()
    assert before["events"] == 2  # the service registered for the incidents, the import

    again = conveyor("import", str(history), "--json", check=True).json()
    assert again["deployments"] == {"added": 0, "present": 5, "changes_added": 0}
    assert again["incidents"] == {"added": 0, "present": 2, "resolved": 0}
    text = conveyor("import", str(history), check=True).stdout
    assert "deployments: 0 new, 5 already present" in text
    store = store_of(conveyor)
    try:
        assert counts(store) == before
    finally:
        store.close()


def test_a_bad_line_in_the_middle_imports_nothing(conveyor: Conveyor) -> None:
    history = conveyor.cwd.parent / "history.jsonl"
    lines = HISTORY.splitlines()
    bad = json.loads(lines[4])
    bad["finished_at"] = "yesterday"
    lines[4] = json.dumps(bad)
    history.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = conveyor("import", str(history))
    assert result.returncode == 1
    assert "error: line 5: finished_at: 'yesterday' is not an RFC 3339 time" in result.stderr
    assert "nothing from this file was imported" in result.stderr
    store = store_of(conveyor)
    try:
        assert counts(store) == dict.fromkeys(
            ("deployment_facts", "change_facts", "incidents", "services", "events"), 0
        )
    finally:
        store.close()


def test_every_bad_line_is_named_with_its_field(store: Store) -> None:
    text = jsonl(
        deployment("ok", 0, commits=[(1, 1)]),
        deployment("d2", 1, commits=[(2, 1)], finished_at=at(0)),
        deployment("d3", 2, commit="not-a-sha", commits=[(3, 1)]),
        deployment("d4", 3, commits=None),
        deployment("d5", 4, commits=[(4, 1)], stauts="failed"),
        "{not json",
        incident("i1", 5, 4),
        deployment("ok", 6, commits=[]),
        {"kind": "release"},
        deployment("d6", 7, commits=None) | {"commits": [{"sha": sha(5)}]},
    )
    with pytest.raises(ImportFailed) as failed:
        import_history(store, text)
    assert failed.value.errors == [
        "line 2: finished_at: before started_at",
        "line 3: commit: 'not-a-sha' is not a commit id (7 to 64 hexadecimal digits)",
        "line 4: commits: missing: give the commits the deployment brought ([] if none), or a "
        "repository to compute them from",
        "line 5: stauts: unknown field (value 'failed'); see docs/import.md",
        "line 6: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        "line 7: resolved_at: before opened_at",
        "line 8: id: deployment 'ok' of shop is already on line 1",
        "line 9: kind: 'release' is not a record kind: use deployment or incident",
        "line 10: commits.0.committed_at: missing",
    ]
    assert counts(store)["deployment_facts"] == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-05-01T10:00:00", "'2024-05-01T10:00:00' has no time zone: add Z for UTC"),
        ("2024-05-01 10:00:00", "'2024-05-01 10:00:00' has no time zone"),
        ("2024-05-01", "'2024-05-01' is a date, not a time"),
        (1714557600, "expected an RFC 3339 time as a string"),
    ],
)
def test_naive_and_other_non_rfc3339_times_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ImportFailed) as failed:
        parse(jsonl(deployment("d1", 0, commits=[], started_at=value)))
    assert failed.value.errors[0].startswith(f"line 1: started_at: {message}")


def piped(conveyor: Conveyor, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`conveyor import ... -` with ``text`` on its standard input."""
    return conveyor.completed("import", *args, "-", stdin=text)


def test_the_cli_refuses_a_naive_time_and_reads_stdin(conveyor: Conveyor) -> None:
    naive = piped(
        conveyor, jsonl(deployment("d1", 0, commits=[], finished_at="2024-05-01T10:30:00"))
    )
    assert naive.returncode == 1
    assert "error: line 1: finished_at: '2024-05-01T10:30:00' has no time zone" in naive.stderr
    assert "Traceback" not in naive.stderr
    good = piped(conveyor, jsonl(deployment("d1", 0, commits=[])), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["deployments"]["added"] == 1


def test_dry_run_checks_everything_and_stores_nothing(store: Store) -> None:
    summary = import_history(store, HISTORY, dry_run=True)
    assert summary.dry_run
    assert (summary.deployments_added, summary.changes_added, summary.incidents_added) == (5, 5, 2)
    assert counts(store)["deployment_facts"] == 0
    assert counts(store)["events"] == 0


# --- commit ranges from a repository ----------------------------------------------------------


def test_repository_ranges_follow_merges_and_the_previous_imported_deployment(
    tmp_path: Path, repo: GitRepo, store: Store
) -> None:
    base = repo.commit("base")
    v1 = repo.commit("v1")
    repo.git("checkout", "-q", "-b", "feature")
    f1 = repo.commit("feature 1")
    f2 = repo.commit("feature 2")
    repo.git("checkout", "-q", "main")
    m1 = repo.commit("fix on main")
    repo.git("merge", "-q", "--no-ff", "feature", "-m", "merge feature")
    merge = repo.git("rev-parse", "HEAD")
    after = repo.commit("after the merge")

    def record(id: str, commit: str, start: float, status: str = "succeeded") -> dict[str, Any]:
        return deployment(id, start, status=status, commit=commit, commits=None) | {
            "repository": "repo"  # relative to the file's directory
        }

    # Written out of order: ranges follow finished_at, not the order of the lines.
    first = jsonl(record("v2", merge, 10), record("v1", v1, 0), record("bad", m1, 5, "failed"))
    summary = import_history(store, first, base=tmp_path)
    assert summary.deployments_added == 3
    # The first deployment brings its whole history (the DORA look-back limits what counts).
    assert changes(store, "i:shop:v1") == sorted([base, v1])
    assert changes(store, "i:shop:bad") == []
    # The merge brings both branches' commits, relative to v1 (the previous success).
    assert changes(store, "i:shop:v2") == sorted([f1, f2, m1, merge])

    # A later file: the previous successful deployment is the one imported before.
    second = jsonl(record("v3", after, 20) | {"repository": str(repo.path)})
    summary = import_history(store, second)
    assert changes(store, "i:shop:v3") == [after]
    # Importing it again computes nothing and changes nothing.
    before = counts(store)
    import_history(store, second)
    assert counts(store) == before


def test_a_repository_that_cannot_give_the_range_names_the_line(
    tmp_path: Path, repo: GitRepo, store: Store
) -> None:
    repo.commit("one")
    text = jsonl(
        deployment("d1", 0, commits=None, commit=sha(7), repository=str(repo.path)),
        deployment("d2", 1, commits=None, repository="elsewhere"),
    )
    with pytest.raises(ImportFailed) as failed:
        import_history(store, text, base=tmp_path)
    [missing] = failed.value.errors
    assert missing == f"line 2: repository: '{tmp_path / 'elsewhere'}' is not a directory"
    with pytest.raises(ImportFailed) as failed:
        import_history(store, jsonl(json.loads(text.splitlines()[0])))
    [unknown] = failed.value.errors
    assert unknown.startswith(f"line 1: repository: cannot list the commits of {sha(7)[:12]}")
    assert counts(store)["deployment_facts"] == 0


# --- CDEvents ---------------------------------------------------------------------------------


def cdevent(kind: str, event_id: str, when: float, subject: dict[str, Any], **extra: Any) -> Any:
    return {
        "context": {
            "version": "0.4.1",
            "id": event_id,
            "source": "/tekton/prod",
            "type": f"dev.cdevents.{kind}",
            "timestamp": at(when),
        },
        "subject": subject,
    } | extra


ARTIFACT = f"pkg:golang/example.com/shop@{sha(42)[:14]}"
ARTIFACT2 = f"pkg:golang/example.com/shop@{sha(43)[:14]}"
SERVICE_SUBJECT = {
    "id": "service/shop",
    "source": "/k8s/prod",
    "type": "service",
    "content": {"environment": {"id": "production"}, "artifactId": ARTIFACT},
}
INCIDENT_SUBJECT = {
    "id": "INC-7",
    "source": "/monitoring/prod",
    "type": "incident",
    "content": {
        "description": "Response time above 10ms",
        "environment": {"id": "production"},
        "service": {"id": "shop"},
        "artifactId": ARTIFACT,
    },
}


def test_cdevents_deployments_rollbacks_and_incidents(store: Store) -> None:
    deployed = cdevent("service.deployed.0.2.0", "ev-1", 0, SERVICE_SUBJECT)
    upgraded = cdevent(
        "service.upgraded.0.2.0",
        "ev-2",
        10,
        {
            **SERVICE_SUBJECT,
            "content": {"environment": {"id": "production"}, "artifactId": ARTIFACT2},
        },
        customData={"commit": sha(43), "commits": [{"sha": sha(43), "committed_at": at(9)}]},
    )
    # A CloudEvent in structured mode whose data is the CDEvent.
    rolled_back = {
        "specversion": "1.0",
        "id": "ev-3",
        "source": "/tekton/prod",
        "type": "dev.cdevents.service.rolledback.0.2.0",
        "time": at(11),
        "datacontenttype": "application/json",
        "data": cdevent("service.rolledback.0.2.0", "ev-3", 11, SERVICE_SUBJECT),
    }
    about_v2 = {
        **INCIDENT_SUBJECT,
        "content": {**INCIDENT_SUBJECT["content"], "artifactId": ARTIFACT2},
    }
    detected = cdevent("incident.detected.0.2.0", "ev-4", 10.5, about_v2)
    # A CloudEvent whose attributes are the context, and data the rest.
    resolved = {
        "specversion": "1.0",
        "id": "ev-5",
        "source": "/monitoring/prod",
        "type": "dev.cdevents.incident.resolved.0.2.0",
        "time": at(11.5),
        "data": {"subject": INCIDENT_SUBJECT},
    }
    other = cdevent("pipelinerun.finished.0.2.0", "ev-6", 12, {"id": "run-1", "content": {}})
    text = jsonl(deployed, upgraded, rolled_back, detected, resolved, other, deployed)
    summary = import_history(store, text)
    assert (summary.deployments_added, summary.incidents_added) == (3, 1)
    assert summary.ignored == {"pipelinerun.finished": 1}
    assert summary.duplicates == 1  # the same event twice

    found = facts(store)
    ev1, ev2, ev3 = found["i:shop:ev-1"], found["i:shop:ev-2"], found["i:shop:ev-3"]
    assert (ev1.kind, ev1.result, ev1.sha, ev1.tier) == (
        "deploy",
        "succeeded",
        sha(42)[:14],
        "production",
    )
    assert ev1.started_at == ev1.finished_at == T0
    # The rollback undid the deployment before it, which so was rolled back.
    assert (ev2.result, ev2.failed_at) == ("rolled_back", T0 + dt.timedelta(hours=10))
    assert (ev3.kind, ev3.result, ev3.rollback_of, ev3.sha) == (
        "rollback",
        "succeeded",
        "i:shop:ev-2",
        sha(42)[:14],
    )
    assert changes(store, "i:shop:ev-2") == []  # rolled back: its commit has no lead time
    [inc] = incidents(store).values()
    assert (inc.external_id, inc.status, inc.title, inc.environment) == (
        "shop:INC-7",
        "resolved",
        "Response time above 10ms",
        "production",
    )
    assert (inc.opened_at, inc.resolved_at) == (
        T0 + dt.timedelta(hours=10.5),
        T0 + dt.timedelta(hours=11.5),
    )
    # Attributed by artifact: the latest deployment of the same artifact before it opened.
    assert (inc.data, inc.deployment_key) == ({}, "i:shop:ev-2")

    before = counts(store)
    import_history(store, text)
    assert counts(store) == before


def test_a_cdevent_incident_resolved_in_a_later_file(store: Store) -> None:
    detected = cdevent("incident.detected.0.2.0", "ev-1", 1, INCIDENT_SUBJECT)
    resolved = cdevent("incident.resolved.0.2.0", "ev-2", 3, INCIDENT_SUBJECT)
    import_history(store, jsonl(detected))
    assert incidents(store)["shop:INC-7"].status == "open"
    summary = import_history(store, jsonl(resolved))
    assert (summary.incidents_present, summary.incidents_resolved) == (1, 1)
    inc = incidents(store)["shop:INC-7"]
    assert (inc.status, inc.resolved_at) == ("resolved", T0 + dt.timedelta(hours=3))
    # A resolution of an incident nobody detected is skipped, with a warning.
    other = {**INCIDENT_SUBJECT, "id": "INC-8"}
    summary = import_history(store, jsonl(cdevent("incident.resolved.0.2.0", "ev-3", 4, other)))
    assert summary.incidents_added == 0
    assert summary.warnings == [
        "line 1: incident 'INC-8' of shop was resolved but never detected (neither in this "
        "file nor imported before): skipped"
    ]


def test_bad_cdevents_name_the_event_field(store: Store) -> None:
    no_environment = {**SERVICE_SUBJECT, "content": {"artifactId": ARTIFACT}}
    no_service = {**INCIDENT_SUBJECT, "content": {"environment": {"id": "production"}}}
    wrapped_bad_time = {
        "specversion": "1.0",
        "id": "ev-3",
        "source": "/x",
        "type": "dev.cdevents.service.deployed.0.2.0",
        "time": "2024-05-01T10:00:00",
        "data": {"subject": SERVICE_SUBJECT},
    }
    text = jsonl(
        cdevent("service.deployed.0.2.0", "ev-1", 0, no_environment),
        cdevent("incident.detected.0.2.0", "ev-2", 0, no_service),
        wrapped_bad_time,
        {"specversion": "1.0", "id": "x", "source": "/x", "type": "com.example.other"},
        cdevent("service.deployed.0.2.0", "ev-4", 0, SERVICE_SUBJECT, customData={"tier": "x"}),
    )
    with pytest.raises(ImportFailed) as failed:
        import_history(store, text)
    assert failed.value.errors == [
        "line 1: subject.content.environment.id: missing",
        "line 2: subject.content.service: missing: Conveyor needs the service the incident is "
        "about (or customData.service)",
        "line 3: time: '2024-05-01T10:00:00' has no time zone: add Z for UTC or an offset such "
        "as +02:00 (naive times are refused, they would be read in an unknown zone)",
        "line 4: type: 'com.example.other' is not a CDEvent type (dev.cdevents.*)",
        "line 5: customData.tier: Input should be 'development', 'staging' or 'production'",
    ]


def test_a_later_incident_may_name_a_deployment_imported_before(store: Store) -> None:
    import_history(store, HISTORY)
    summary = import_history(store, jsonl(incident("late", 70, 71, deployment="s1")))
    assert summary.incidents_added == 1
    late = incidents(store)["shop:late"]
    assert (late.deployment_key, late.environment) == ("i:shop:s1", "staging")


# --- attribution to Conveyor's own deployments ------------------------------------------------


def test_an_imported_incident_may_name_one_of_conveyors_deployments(store: Store) -> None:
    with store.write() as w:
        svc = Service(name="shop", repository="/srv/shop")
        w.session.add(svc)
        w.session.flush()
        run = Run(service_id=svc.id, status="succeeded", sha=sha(9), trigger="manual")
        w.session.add(run)
        w.session.flush()
        release = Release(service_id=svc.id, run_id=run.id, sha=sha(9))
        w.session.add(release)
        w.session.flush()
        dep = Deployment(
            service_id=svc.id,
            environment="production",
            tier="production",
            release_id=release.id,
            status="succeeded",
            trigger="auto",
        )
        w.session.add(dep)
        w.session.flush()
        dep_id, release_id = dep.id, release.id
    summary = import_history(
        store, jsonl(incident("pd-1", 1, 2, deployment=f"c{dep_id}"), incident("pd-2", 3, None))
    )
    assert summary.incidents_added == 2
    inc = incidents(store)["shop:pd-1"]
    assert (inc.deployment_id, inc.release_id, inc.environment) == (
        dep_id,
        release_id,
        "production",
    )
    assert (inc.data, inc.deployment_key) == ({}, f"c{dep_id}")
    with store.session() as session:
        assert session.scalar(select(Service.repository).where(Service.name == "shop")) == (
            "/srv/shop"  # an existing service is left as it is
        )
    with pytest.raises(ImportFailed) as failed:
        import_history(store, jsonl(incident("pd-3", 1, 2, deployment="c999")))
    assert failed.value.errors == [
        "line 1: deployment: no deployment 'c999' of shop in this file, in earlier imports or "
        "among Conveyor's deployments"
    ]


# --- through the API --------------------------------------------------------------------------


def test_the_api_imports_all_or_nothing_for_admins(
    serve: Serve,  # noqa: F811 (the fixture imported above)
) -> None:
    async def body(api: Api) -> None:
        headers = {"Content-Type": "application/x-ndjson"}
        reader = api.token("read")
        r = await api.post("/import", content=HISTORY, token=reader, headers=headers)
        assert r.status_code == 403, r.text

        lines = HISTORY.splitlines()
        lines[5] = lines[5].replace('"status": "succeeded"', '"status": "done"')
        r = await api.post("/import", content="\n".join(lines), headers=headers)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_import"
        assert error["errors"] == [
            "line 6: status: Input should be 'succeeded', 'failed' or 'rolled_back'"
        ]
        assert api.count(DeploymentFactRow) == 0

        r = await api.post("/import?dry_run=true", content=HISTORY, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["dry_run"] is True
        assert api.count(DeploymentFactRow) == 0

        r = await api.post("/import", content=HISTORY, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["deployments"]["added"] == 5
        assert api.count(DeploymentFactRow) == 5
        assert api.count(Incident) == 2
        events = api.count(Event)
        r = await api.post("/import", content=HISTORY, headers=headers)
        assert r.json()["deployments"] == {"added": 0, "present": 5, "changes_added": 0}
        assert api.count(Event) == events
        with api.store.session() as session:
            [imported] = session.scalars(select(Event).where(Event.type == "history.imported"))
            assert imported.data["actor"] == "root"

        relative = jsonl(deployment("x", 0, commits=None, repository="repo"))
        r = await api.post("/import", content=relative, headers=headers)
        assert r.status_code == 400
        assert "line 1: repository: 'repo' is relative" in r.json()["error"]["message"]

        state = api.app.state.conveyor
        state.config = dataclasses.replace(api.config, body_limits=BodyLimits(imports=1000))
        r = await api.post("/import", content=HISTORY, headers=headers)
        assert r.status_code == 413
        assert r.json()["error"]["message"] == "the file is larger than 1000 bytes; split it"
        state.config = api.config

        r = await api.post("/import", content=b"\xff\xfe", headers=headers)
        assert r.status_code == 400
        assert r.json()["error"]["message"].startswith("line 1: not UTF-8 text")

    serve(body)


@pytest.mark.integration
def test_the_cli_imports_through_a_server(tmp_path: Path, conveyor: Conveyor) -> None:
    server = ServerProcess(tmp_path / "server-home")
    server.admin = server.token("me", "admin")
    server.start()
    try:
        history = tmp_path / "history.jsonl"
        history.write_text(HISTORY, encoding="utf-8")
        conveyor.extra_env.update(CONVEYOR_URL=server.url, CONVEYOR_TOKEN=server.admin)
        result = conveyor("import", str(history), check=True)
        assert "deployments: 5 new, 0 already present (5 commits)" in result.stdout
        again = conveyor("import", str(history), "--json", check=True).json()
        assert again["deployments"]["present"] == 5
        history.write_text(HISTORY.replace('"failed"', '"nope"', 1), encoding="utf-8")
        bad = conveyor("import", str(history))
        assert bad.returncode == 1
        assert "error: line 4: status: Input should be" in bad.stderr
    finally:
        server.stop()
    assert not (conveyor.home / "conveyor.db").exists()  # nothing was written locally
