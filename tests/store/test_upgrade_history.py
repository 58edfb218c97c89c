"""Upgrades keep history: a database made at each earlier schema, with rows valid at each step,
upgraded to head keeps every row, and its DORA report equals that of the same history recorded
at head by the code that ends deployments (issue 13, decision 0013)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select
from tests import pg
from tests.conftest import GIT_ENV

from conveyor.cli.main import cli
from conveyor.engine.recording import previous_success, record_deployment_fact
from conveyor.facts import DeploymentResult
from conveyor.metrics import load
from conveyor.metrics.backfill import backfill_facts
from conveyor.metrics.dora import Settings as DoraSettings
from conveyor.metrics.dora import Window
from conveyor.metrics.ranges import commit_range
from conveyor.metrics.summary import default_profile
from conveyor.store.db import SCHEMA_REVISION, Settings, Store, make_engine, open_store, upgrade
from conveyor.store.models import Base, ChangeFactRow, Deployment, DeploymentFactRow, DoraSummary

EARLIER = [f"{n:04d}" for n in range(1, int(SCHEMA_REVISION))]
DAY = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
WINDOW = Window(dt.date(2024, 3, 1), dt.date(2024, 4, 1))


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return DAY.replace(day=day, hour=hour, minute=minute)


PIPELINE = {
    "service": "web",
    "jobs": {"build": {"run": "true"}},
    "environments": {
        "staging": {"deploy": {"target": "process", "start": "true"}},
        "production": {
            "after": "staging",
            "tier": "production",
            "approval": {"approvers": ["ops"], "required": 1},
            "deploy": {"target": "process", "start": "true"},
            "on_failure": "rollback",
        },
    },
}


def make_repo(path: Path) -> list[str]:
    """A repository with five commits at known times; returns their ids, oldest first."""
    path.mkdir()
    shas = []
    for n, day in enumerate((28, 1, 4, 7, 11)):
        when = (dt.datetime(2024, 2, 28, 9, tzinfo=dt.UTC) if day == 28 else at(day, 9)).isoformat()
        env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        if n == 0:
            subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
        (path / "f.txt").write_text(f"{n}\n")
        subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
        subprocess.run(["git", "commit", "-qm", f"c{n}"], cwd=path, check=True, env=env)
        shas.append(
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=path, check=True, env=env, capture_output=True
            ).stdout.decode()
        )
    return [s.strip() for s in shas]


Rows = list[tuple[str, str, list[dict[str, Any]]]]


def history(repo: Path, gone: Path, shas: list[str]) -> Rows:
    """(revision that can hold them, table, rows): what a Conveyor of that schema had written."""
    created = at(1, 8)
    runs = [
        {
            "id": i + 1,
            "service_id": 1,
            "status": "succeeded",
            "sha": sha,
            "ref": "refs/heads/main",
            "trigger": "push",
            "commit": {"message": f"c{i + 1}"},
            "pipeline": PIPELINE,
            "created_at": at(day, 9, 30),
            "started_at": at(day, 9, 31),
            "finished_at": at(day, 9, 40),
            "cancel_requested": False,
        }
        for i, (sha, day) in enumerate(zip(shas[1:], (1, 4, 7, 11), strict=True))
    ]
    runs.append({**runs[0], "id": 5, "service_id": 2, "sha": "ab" * 20})
    deployment = {
        "kind": "deploy",
        "trigger": "auto",
        "checks": [],
        "log": [],
        "instance": {},
        "created_at": created,
    }

    def dep(
        id_: int,
        env: str,
        release: int,
        status: str,
        start: dt.datetime,
        end: dt.datetime,
        **kw: Any,
    ) -> dict[str, Any]:
        tier = "production" if env == "production" else "staging"
        return {
            **deployment,
            "id": id_,
            "service_id": 2 if release == 5 else 1,
            "environment": env,
            "tier": tier,
            "release_id": release,
            "status": status,
            "started_at": start,
            "healthy_at": end if status == "succeeded" else None,
            "finished_at": end,
            **kw,
        }

    deployments = [
        dep(1, "staging", 1, "succeeded", at(2, 10), at(2, 10, 5)),
        dep(2, "production", 1, "succeeded", at(2, 11), at(2, 11, 10)),
        dep(3, "production", 5, "succeeded", at(3, 11), at(3, 11, 5)),
        dep(4, "staging", 2, "succeeded", at(5, 10), at(5, 10, 5)),
        dep(5, "production", 2, "rolled_back", at(5, 11), at(5, 11, 20), reason="unhealthy"),
        dep(6, "production", 1, "succeeded", at(5, 11, 8), at(5, 11, 20), kind="rollback",
            trigger="failure", rollback_of=5, previous_release_id=2),
        dep(7, "staging", 3, "succeeded", at(8, 10), at(8, 10, 5)),
        dep(8, "production", 3, "succeeded", at(8, 11), at(8, 11, 10)),
        dep(9, "production", 4, "failed", at(12, 11), at(12, 11, 5), reason="unhealthy"),
    ]  # fmt: skip
    return [
        ("0001", "services", [
            {"id": 1, "name": "web", "repository": str(repo), "created_at": created},
            {"id": 2, "name": "lost", "repository": str(gone), "created_at": created},
        ]),
        ("0001", "runs", runs),
        ("0001", "jobs", [
            {"id": r["id"], "run_id": r["id"], "name": "build", "position": 0,
             "status": "succeeded", "needs": [], "config": {"run": "true"},
             "started_at": r["started_at"], "finished_at": r["finished_at"],
             "runner": "local", "lease_token": 1}
            for r in runs
        ]),
        ("0001", "steps", [
            {"id": 1, "job_id": 1, "position": 0, "name": "true", "status": "succeeded",
             "exit_code": 0, "attempts": 1, "started_at": at(1, 9, 31), "finished_at": at(1, 9, 32)}
        ]),
        ("0001", "log_lines", [
            {"id": 1, "job_id": 1, "step_position": 0, "seq": 1, "ts": at(1, 9, 31), "text": "ok"}
        ]),
        ("0001", "artifacts", [
            {"id": 1, "run_id": 1, "job_id": 1, "path": "dist/app.whl",
             "digest": "sha256:" + "0" * 64, "size": 10, "created_at": at(1, 9, 40)}
        ]),
        ("0001", "events", [
            {"id": 1, "ts": at(1, 9, 30), "type": "run.queued", "service": "web", "run_id": 1,
             "data": {"sha": shas[1]}}
        ]),
        ("0003", "tokens", [
            {"id": 1, "name": "ci", "token_hash": "f" * 64, "prefix": "cvy_ab", "scopes": ["read"],
             "created_at": created}
        ]),
        ("0003", "deliveries", [
            {"id": 1, "source": "github", "delivery_id": "d-1", "service": "web",
             "received_at": at(1, 9, 29), "status": "accepted", "payload": {}, "run_id": 1}
        ]),
        ("0004", "releases", [
            {"id": r["id"], "service_id": r["service_id"], "run_id": r["id"], "sha": r["sha"],
             "ref": r["ref"], "created_at": r["finished_at"], "evidence": {}}
            for r in runs
        ]),
        ("0005", "deployments", deployments),
        ("0005", "environments", [
            {"id": 1, "service_id": 1, "name": "production", "tier": "production",
             "current_release_id": 3, "current_deployment_id": 8, "verified_release_id": 3,
             "instance": {}, "healthy": False, "since": at(8, 11, 10), "held": False,
             "updated_at": at(12, 11, 5)}
        ]),
        ("0005", "approvals", [
            {"id": 1, "deployment_id": 2, "kind": "approval", "status": "approved",
             "approvers": ["ops"], "required": 1, "self_approval": False, "excluded": [],
             "on_timeout": "reject", "requested_at": at(2, 10, 6), "decided_at": at(2, 10, 55)}
        ]),
        ("0005", "approval_decisions", [
            {"id": 1, "approval_id": 1, "user": "olga", "decision": "approve", "via": "cli",
             "at": at(2, 10, 55)}
        ]),
        ("0005", "incidents", [
            {"id": 1, "service_id": 1, "environment": "production", "status": "resolved",
             "title": "errors", "source": "alertmanager", "opened_at": at(8, 12),
             "resolved_at": at(8, 14), "data": {}}
        ]),
        ("0005", "users", [
            {"id": 1, "name": "olga", "emails": ["olga@example.com"], "groups": ["ops"],
             "created_at": created}
        ]),
        ("0005", "notifications", [
            {"id": 1, "service_id": 1, "event": "deployment.failed", "channel": "slack",
             "notifier": {}, "notice": {"text": "failed"}, "status": "sent", "attempts": 1,
             "created_at": at(12, 11, 5)}
        ]),
        ("0006", "event_cursors", [
            {"name": "cdevents", "last_event_id": 1, "updated_at": at(12, 12)}
        ]),
        ("0008", "sessions", [
            {"id": 1, "digest": "e" * 64, "user": "olga", "scopes": ["read"],
             "created_at": at(12, 12), "expires_at": at(13, 12), "last_seen_at": at(12, 12)}
        ]),
    ]  # fmt: skip


def _table(name: str, columns: list[str]) -> sa.Table:
    """Just these columns, typed as at head: inserts valid at a revision that lacks the rest."""
    head = Base.metadata.tables[name]
    return sa.Table(name, sa.MetaData(), *(sa.Column(c, head.c[c].type) for c in columns))


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def insert(engine: sa.Engine, table: str, rows: list[dict[str, Any]]) -> None:
    columns = _columns(rows)
    with engine.begin() as conn:
        conn.execute(
            _table(table, columns).insert(), [{c: r.get(c) for c in columns} for r in rows]
        )
        if conn.dialect.name == "postgresql" and "id" in rows[0]:
            # Explicit ids leave the sequence behind: go on after them, as SQLite does.
            newest = select(sa.func.max(sa.column("id"))).select_from(sa.table(table))
            sequence = sa.func.pg_get_serial_sequence(table, "id")
            conn.execute(select(sa.func.setval(sequence, newest.scalar_subquery())))


def build_at(engine: sa.Engine, target: str, rows: Rows) -> None:
    """Step by step up to ``target``, inserting each row at the first revision that holds it."""
    for revision in [r for r in EARLIER if r <= target]:
        upgrade(engine, revision)
        for since, table, batch in rows:
            if since == revision:
                insert(engine, table, batch)


def record_as_at_head(store: Store, repo: Path) -> None:
    """What the controller writes when each deployment ends (engine.outcomes), in that order;
    failures with the detection time 0006 records (a rollback starts at detection)."""
    results: dict[str, DeploymentResult] = {
        "succeeded": "succeeded",
        "failed": "failed",
        "rolled_back": "rolled_back",
    }
    with store.write() as w:
        for id_, failed in ((5, at(5, 11, 8)), (9, at(12, 11, 5))):
            dep = w.session.get(Deployment, id_)
            if dep is not None:
                dep.failed_at = failed
        # The process target replaces in place: every deployment served, from when it became
        # healthy or, failing, from its failure (engine.outcomes.fail with serving=True).
        for dep in w.session.scalars(select(Deployment)):
            dep.served_at = dep.healthy_at or dep.failed_at or dep.finished_at
        for dep in w.session.scalars(
            select(Deployment).order_by(Deployment.finished_at, Deployment.id)
        ):
            changes = []
            if dep.status == "succeeded" and dep.kind == "deploy" and dep.service.name == "web":
                previous = previous_success(w.session, "web", dep.environment)
                changes = commit_range(repo, dep.release.sha, previous)
            record_deployment_fact(w, dep, results[dep.status], changes)
            w.session.flush()


def written_by_0006(store: Store) -> Rows:
    """The fact rows of deployments 1 and 2, as 0006's code wrote them."""
    out: Rows = []
    with store.engine.connect() as conn:
        for table, link in (
            ("deployment_facts", DeploymentFactRow.deployment_id),
            ("change_facts", ChangeFactRow.fact_id),
        ):
            found = conn.execute(
                select(Base.metadata.tables[table]).where(link.in_([1, 2])).order_by("id")
            ).all()
            # Without what later schemas added (served_at, 0014): 0006's code never wrote it.
            later = {"served_at"}
            out.append(
                (
                    "0006",
                    table,
                    [{k: v for k, v in r._mapping.items() if k not in later} for r in found],
                )
            )
    return out


def dump(store: Store, rows: Rows) -> dict[str, list[tuple[Any, ...]]]:
    """Every fixture row as the database holds it now."""
    out = {}
    with store.engine.connect() as conn:
        for _, table, batch in rows:
            t = _table(table, _columns(batch))
            out[table] = sorted(map(tuple, conn.execute(select(*t.c)).all()), key=repr)
    return out


def figures(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary's report and the engine's (from the facts), as `conveyor dora --json`."""
    settings = DoraSettings()
    summary = load.report(store, WINDOW, settings).to_json()
    engine = load.engine_report(store, WINDOW, DoraSettings(explain=True)).to_json()
    return summary, engine


def facts(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as session:
        rows = session.execute(
            select(
                DeploymentFactRow.key,
                DeploymentFactRow.result,
                DeploymentFactRow.failed_at,
                DeploymentFactRow.stages,
                DeploymentFactRow.sha,
            )
        ).all()
        changes = session.scalar(select(sa.func.count(ChangeFactRow.id)))
    return [*sorted(map(tuple, rows)), ("changes", changes)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two new databases: one to upgrade, one made fresh at head."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin = pg.admin_url()
    with pg.fresh_database(admin) as old, pg.fresh_database(admin) as fresh:
        yield old, fresh


@pytest.mark.timeout(60)
@pytest.mark.parametrize("revision", EARLIER)
def test_upgrade_from_each_schema_keeps_every_row_and_the_dora_figures(
    revision: str, two_databases: tuple[str, str], tmp_path: Path
) -> None:
    repo, gone = tmp_path / "repo", tmp_path / "gone"
    shas = make_repo(repo)
    rows = history(repo, gone, shas)
    old_url, fresh_url = two_databases
    old = Settings(home=tmp_path / "old", database_url=old_url)
    fresh = Settings(home=tmp_path / "fresh", database_url=fresh_url)
    for s in (old, fresh):
        s.home.mkdir()

    made = open_store(fresh)
    try:
        for since, table, batch in rows:
            if since <= revision:
                insert(made.engine, table, batch)
        record_as_at_head(made, repo)
        written = written_by_0006(made)
    finally:
        made.close()
    if revision >= "0006":
        # A Conveyor at this schema wrote the facts of the deployments made after its upgrade
        # (here: the first two); those made before it kept none (what was found).
        rows += written

    engine = make_engine(old)
    try:
        build_at(engine, revision, rows)
        before = {t: len(b) for since, t, b in rows if since <= revision}
        upgrade(engine)
    finally:
        engine.dispose()
    warnings: list[str] = []
    upgraded = open_store(old)
    try:
        first = backfill_facts(upgraded, warn=warnings.append)
        again = backfill_facts(upgraded)
        kept = dump(upgraded, rows)
        old_facts, old_figures = facts(upgraded), figures(upgraded)
    finally:
        upgraded.close()

    made = open_store(fresh)
    try:
        expected = dump(made, rows)
        fresh_facts, fresh_figures = facts(made), figures(made)
    finally:
        made.close()

    counted = {t: n for t, n in before.items() if not t.endswith("_facts")}  # facts: derived
    assert {t: len(kept[t]) for t in counted} == counted
    assert {t: kept[t] for t in before} == {t: expected[t] for t in before}
    assert again.derived == 0
    assert old_facts == fresh_facts
    assert old_figures == fresh_figures
    if revision < "0005":  # no deployments before schema 0005: nothing to derive
        assert first.derived == 0
        assert warnings == []
        return
    assert first.derived == (7 if revision >= "0006" else 9)
    assert warnings == [
        "service lost: its repository cannot be read, so 1 deployment(s) got facts without "
        "commits (no lead time for them)"
    ]
    metrics = old_figures[0]["metrics"]
    # Production: r1, the lost service's release and r3 succeeded (the rollback does not count);
    # r2 was rolled back, r3 had an incident, r4 failed and nothing restored it.
    assert metrics["deployment_frequency"]["count"] == 3
    assert (
        metrics["change_failure_rate"]["failed"],
        metrics["change_failure_rate"]["deployments"],
    ) == (3, 5)
    # Recovered in 12 min (rollback) and 2 h (incident): median 66 min.
    assert metrics["recovery_time"]["median"] == 3960.0
    assert metrics["recovery_time"]["not_restored"] == 1
    # Two commits reached production with r1, two with r3 (r2's ones included: it was undone).
    assert metrics["lead_time"]["sample_size"] == 4
    assert metrics["rework_rate"]["unplanned"] == 1


def test_db_upgrade_derives_the_facts_and_names_a_service_whose_repository_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, gone = tmp_path / "repo", tmp_path / "gone"
    rows = history(repo, gone, make_repo(repo))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CONVEYOR_HOME", str(home))
    monkeypatch.delenv("CONVEYOR_DATABASE_URL", raising=False)
    engine = make_engine(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    try:
        build_at(engine, "0005", rows)
    finally:
        engine.dispose()

    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"upgraded the database from schema 0005 to {SCHEMA_REVISION}" in result.output
    assert "derived the DORA facts of 9 earlier deployment(s)" in result.output
    assert "warning: service lost: its repository cannot be read" in result.output
    assert "Traceback" not in result.output
    # The history is summarised by the upgrade: the first report only adds days up.
    assert "the DORA summary is up to date" in result.output
    upgraded = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    try:
        with upgraded.session() as session:
            assert session.get(DoraSummary, default_profile()) is not None
    finally:
        upgraded.close()

    again = CliRunner().invoke(cli, ["db", "backfill"])
    assert again.exit_code == 0, again.output
    assert again.output == "every ended deployment has its DORA facts\n"
