"""The DORA summary (metrics.summary) gives exactly the engine's report: over a random history
(failures, rollbacks, fixes, two production environments sharing commits, incidents by window,
named, overlapping and still open, a staging tier), for windows of every length, in time zones
with whole- and half-hour offsets, by day, week and month, for all services and for one; and
again after the history changes under it (later and out-of-order deployments, incidents
opened, resolved and attributed), which it takes in through marks. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from conveyor.errors import ConveyorError
from conveyor.facts import Change, DeploymentFact
from conveyor.metrics import summary
from conveyor.metrics.dora import Settings, Window, from_params
from conveyor.metrics.load import engine_report, report
from conveyor.store.db import Settings as StoreSettings
from conveyor.store.db import Store, open_store
from conveyor.store.facts import write_fact
from conveyor.store.marks import summary_work
from conveyor.store.models import DoraDay, DoraMark, DoraSummary, Incident, Service

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SERVICES = ("shop", "cart", "ledger")


def _history(rng: random.Random, start: dt.datetime, days: int, tag: str) -> list[DeploymentFact]:
    """Deployments of the three services over ``days``: `cart` to two production environments
    (each commit in both ranges), everyone to staging first now and then."""
    facts: list[DeploymentFact] = []
    n = 0
    for service in SERVICES:
        envs = ("production", "production-eu") if service == "cart" else ("production",)
        t = start + dt.timedelta(hours=rng.uniform(0, 30))
        end = start + dt.timedelta(days=days)
        while t < end:
            n += 1
            changes = tuple(
                Change(
                    f"{tag}{service}{n}-{k}",
                    t - dt.timedelta(hours=rng.uniform(0.5, 24 * rng.choice([1, 3, 40]))),
                    t - dt.timedelta(hours=rng.uniform(0.5, 60)),
                    t - dt.timedelta(hours=rng.uniform(0.1, 2)),
                )
                for k in range(rng.randint(0, 4))
            )
            for i, env in enumerate(envs):
                finished = t + dt.timedelta(hours=3 * i, minutes=rng.uniform(1, 20))
                roll = rng.random()
                result = "failed" if roll < 0.08 else "rolled_back" if roll < 0.14 else "succeeded"
                key = f"{tag}{service}-{env}-{n}"
                run = finished - dt.timedelta(hours=rng.uniform(1, 5))
                facts.append(
                    DeploymentFact(
                        id=key,
                        service=service,
                        environment=env,
                        tier="production",
                        kind="deploy",
                        result=result,  # type: ignore[arg-type]
                        sha=f"{key}-sha",
                        started_at=finished - dt.timedelta(minutes=10),
                        finished_at=finished,
                        failed_at=finished - dt.timedelta(minutes=2)
                        if result != "succeeded"
                        else None,
                        rollback_of=None,
                        fixes_incident=rng.random() < 0.05,
                        changes=changes,
                        stages={"run_started": run, "run_finished": run + dt.timedelta(minutes=30)}
                        if rng.random() < 0.7
                        else {},
                        # Some failed ones were stopped before taking traffic (caught); the
                        # others served from a few minutes after they started.
                        served=result != "failed" or rng.random() < 0.5,
                        served_at=finished - dt.timedelta(minutes=7),
                    )
                )
                if result == "rolled_back" or (result == "succeeded" and rng.random() < 0.03):
                    facts.append(
                        DeploymentFact(
                            id=f"{key}-rb",
                            service=service,
                            environment=env,
                            tier="production",
                            kind="rollback",
                            result="succeeded" if rng.random() < 0.9 else "failed",
                            sha="",
                            started_at=finished + dt.timedelta(minutes=1),
                            finished_at=finished + dt.timedelta(minutes=6),
                            failed_at=None,
                            rollback_of=key,
                            fixes_incident=False,
                            changes=(),
                            stages={},
                        )
                    )
            if rng.random() < 0.5:
                staged = t - dt.timedelta(hours=1)
                facts.append(
                    DeploymentFact(
                        id=f"{tag}{service}-staging-{n}",
                        service=service,
                        environment="staging",
                        tier="staging",
                        kind="deploy",
                        result="succeeded" if rng.random() < 0.9 else "failed",
                        sha="",
                        started_at=staged - dt.timedelta(minutes=5),
                        finished_at=staged,
                        failed_at=None,
                        rollback_of=None,
                        fixes_incident=False,
                        changes=changes,
                        stages={},
                    )
                )
            # Quiet spells: whole empty weeks now and then, and sometimes a month.
            t += dt.timedelta(hours=rng.choice([5, 11, 19, 30, 30, 60, 200, 24 * 33]))
    return facts


def _incidents(
    store: Store, rng: random.Random, start: dt.datetime, days: int, facts: list[DeploymentFact]
) -> None:
    ids = _service_ids(store)
    keys = {
        name: [f.id for f in facts if f.service == name and f.tier == "production"]
        for name in SERVICES
    }
    with store.write() as w:
        for _ in range(days // 3):
            service = rng.choice(SERVICES)
            opened = start + dt.timedelta(hours=rng.uniform(0, 24 * days))
            length = dt.timedelta(hours=rng.choice([0.5, 2, 30, 80]))
            resolved = opened + length if rng.random() < 0.9 else None
            named = rng.random() < 0.1 and keys[service]
            key = rng.choice(keys[service]) if named else None
            env = rng.choice([None, "production", "production-eu" if service == "cart" else None])
            w.session.add(
                Incident(
                    service_id=ids[service],
                    environment=env,
                    status="resolved" if resolved else "open",
                    title="down",
                    source="test",
                    opened_at=opened,
                    resolved_at=resolved,
                    deployment_key=key,
                )
            )


def _service_ids(store: Store) -> dict[str, int]:
    with store.write() as w:
        for name in SERVICES:
            if w.session.scalar(select(Service.id).where(Service.name == name)) is None:
                w.session.add(Service(name=name, repository=f"/srv/{name}"))
    with store.session() as s:
        return dict(s.execute(select(Service.name, Service.id)).all())


def _write(store: Store, facts: list[DeploymentFact]) -> None:
    with store.write() as w:
        for fact in facts:
            write_fact(w, fact, source="test")


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equal, floats to within a part in a billion (stage sums add up in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


CASES = [
    # (from, to, tz, by, service, tier)
    ("2024-01-01", "2024-07-01", "UTC", "week", None, "production"),
    ("2024-02-10", "2024-03-01", "UTC", "day", None, "production"),
    ("2024-03-01", "2024-06-01", "America/New_York", "week", None, "production"),
    ("2024-03-25", "2024-04-08", "Asia/Kolkata", "day", "cart", "production"),
    ("2024-01-15", "2024-05-15", "Pacific/Chatham", "month", "shop", "production"),
    ("2024-02-01", "2024-05-01", "UTC", "week", None, "staging"),
    ("2023-12-01", "2024-01-10", "UTC", "week", "ledger", "production"),
]


def _check(store: Store) -> None:
    for start, end, tz, by, service, tier in CASES:
        window = Window(dt.date.fromisoformat(start), dt.date.fromisoformat(end), tz)
        settings = Settings(service=service, tier=tier, by=by)  # type: ignore[arg-type]
        expected = engine_report(store, window, settings).to_json()
        got = summary.report(store, window, settings).to_json()
        _same(got, expected, f"{start}→{end} {tz} {by} {service or 'all'} {tier}")


def test_the_summary_gives_the_engines_report_and_follows_changes(
    tmp_path: Path, database_url: str
) -> None:
    rng = random.Random(20261126)
    store = open_store(StoreSettings(home=tmp_path / "home", database_url=database_url))
    try:
        _service_ids(store)
        facts = _history(rng, START, 120, "a")
        _write(store, facts)
        _incidents(store, rng, START, 120, facts)
        _check(store)
        with store.session() as s:
            profiles = s.scalar(select(func.count()).select_from(DoraSummary))
            days = s.scalar(select(func.count()).select_from(DoraDay))
        assert profiles == 5  # production in four time zones, staging in UTC
        assert days is not None
        assert days > 100

        # The history changes: two more months, a late import of deployments from before,
        # an open incident resolved, another blamed on an old deployment by name.
        later = _history(rng, START + dt.timedelta(days=120), 60, "b")
        earlier = _history(rng, START - dt.timedelta(days=20), 15, "c")
        _write(store, later + earlier)
        _incidents(store, rng, START + dt.timedelta(days=100), 80, later)
        with store.write() as w:
            still_open = w.session.scalars(select(Incident).where(Incident.resolved_at.is_(None)))
            for inc in list(still_open)[:3]:
                inc.status, inc.resolved_at = "resolved", inc.opened_at + dt.timedelta(hours=5)
            first = w.session.scalars(select(Incident).order_by(Incident.id)).first()
            assert first is not None
            first.deployment_key = facts[3].id
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(DoraMark))
        _check(store)
        # Every mark was taken in by every profile, and then dropped.
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(DoraMark)) == 0
            latest = s.scalars(select(DoraSummary.last_mark_id)).all()
            assert len(set(latest)) == 1
    finally:
        store.close()


def test_a_change_retallies_only_the_days_it_can_touch(tmp_path: Path) -> None:
    """A deployment added at the end of one service's history writes that service's last
    days again, and only those: other services' rows and its own older rows stay the very
    same rows (SQLite row ids), and the report still equals the engine's."""
    rng = random.Random(7)
    store = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")
    )

    def rows() -> dict[tuple[str, int], int]:
        with store.session() as s:
            found = s.execute(text("SELECT service, day, rowid FROM dora_days"))
            return {(service, day): rowid for service, day, rowid in found}

    try:
        _service_ids(store)
        facts = _history(rng, START, 90, "a")
        _write(store, facts)
        window = Window(dt.date(2024, 1, 1), dt.date(2024, 5, 1))
        summary.report(store, window, Settings())
        before = rows()
        # cart's rows are the oldest (services are summarised in name order): rows written
        # again get new row ids.
        last = max(f.finished_at for f in facts if f.service == "cart")
        added = next(
            f
            for f in _history(rng, last + dt.timedelta(days=2), 5, "z")
            if f.service == "cart" and f.environment == "production"
        )
        _write(store, [added])
        summary.report(store, window, Settings())
        after = rows()
        kept = {k for k in before if before[k] == after.get(k)}
        assert {k for k in before if k[0] not in ("cart", "*")} <= kept
        # Tallied again: from the last success before the new deployment, less the
        # attribution window (an incident may blame a deployment that far back), on.
        last_ok = max(
            f.finished_at
            for f in facts
            if f.service == "cart"
            and f.tier == "production"
            and f.result == "succeeded"
            and f.kind == "deploy"
        )
        cutoff = (last_ok - dt.timedelta(hours=48)).date().toordinal()
        cart = {k for k in before if k[0] == "cart"}
        assert {k for k in cart if k[1] < cutoff} <= kept
        # All services' rows ("*") are added up again from there on too.
        assert {k for k in before if k[0] == "*" and k[1] < cutoff} <= kept
        assert not {k for k in cart if k[1] >= cutoff} & kept
        _same(
            summary.report(store, window, Settings()).to_json(),
            engine_report(store, window, Settings()).to_json(),
        )
    finally:
        store.close()


def test_a_read_only_store_still_answers_from_the_facts(tmp_path: Path) -> None:
    """Where the summary cannot be written (a read-only database), the report is computed
    from the facts instead: same figures, no error."""
    rng = random.Random(3)
    db = tmp_path / "conveyor.db"
    store = open_store(StoreSettings(home=tmp_path, database_url=f"sqlite:///{db}"))
    try:
        _service_ids(store)
        _write(store, _history(rng, START, 30, "a"))
        window = Window(dt.date(2024, 1, 1), dt.date(2024, 2, 1))
        expected = engine_report(store, window, Settings()).to_json()
    finally:
        store.close()
    read_only = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///file:{db}?mode=ro&uri=true")
    )
    try:
        assert report(read_only, window, Settings()).to_json() == expected
        with read_only.session() as s:
            assert s.scalar(select(func.count()).select_from(DoraSummary)) == 0
    finally:
        read_only.close()


def test_the_server_keeps_profiles_in_use_current(tmp_path: Path) -> None:
    """keep_current (the server's background step) summarises the default profile unasked and
    takes new marks into every profile in use, so a report finds nothing left to do."""
    rng = random.Random(11)
    store = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")
    )
    try:
        _service_ids(store)
        _write(store, _history(rng, START, 40, "a"))
        summary.keep_current(store)
        with store.session() as s:
            assert list(s.scalars(select(DoraSummary.profile))) == [summary.default_profile()]
        paris = Window(dt.date(2024, 1, 1), dt.date(2024, 2, 15), "Europe/Paris")
        summary.report(store, paris, Settings())
        _write(store, _history(rng, START + dt.timedelta(days=40), 5, "b"))
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(DoraMark))
        summary.keep_current(store)
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(DoraMark)) == 0
            assert s.scalar(select(func.count()).select_from(DoraSummary)) == 2
        _same(
            summary.report(store, paris, Settings()).to_json(),
            engine_report(store, paris, Settings()).to_json(),
        )
        # Every mark was taken in and dropped: SQLite numbers the next ones from 1 again,
        # and they must still be taken in.
        _write(store, _history(rng, START + dt.timedelta(days=20), 3, "c"))
        summary.keep_current(store)
        _same(
            summary.report(store, paris, Settings()).to_json(),
            engine_report(store, paris, Settings()).to_json(),
        )
    finally:
        store.close()


def test_a_server_answers_a_profile_not_summarised_yet_from_the_facts(tmp_path: Path) -> None:
    """After an upgrade (summaries dropped) or for a new time zone, the server's report does not
    wait for the whole history to be tallied: it is computed from the window's facts, the same
    figures, and the profile is left to the background step, which summarises it."""
    rng = random.Random(17)
    store = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")
    )

    def profiles() -> list[str]:
        with store.session() as s:
            return sorted(s.scalars(select(DoraSummary.profile)))

    try:
        _service_ids(store)
        _write(store, _history(rng, START, 40, "a"))
        summary.keep_current(store)
        assert profiles() == [summary.default_profile()]
        kolkata = Window(dt.date(2024, 1, 1), dt.date(2024, 2, 10), "Asia/Kolkata")
        wanted = summary.profile_of(kolkata, Settings())
        expected = engine_report(store, kolkata, Settings()).to_json()
        _same(report(store, kolkata, Settings(), summarise=False).to_json(), expected)
        assert profiles() == [summary.default_profile()]
        with store.session() as s:
            assert summary_work(s)
        summary.keep_current(store)  # the server's background step
        assert profiles() == sorted([summary.default_profile(), wanted])
        _same(report(store, kolkata, Settings(), summarise=False).to_json(), expected)
        with store.session() as s:
            assert not summary_work(s)
    finally:
        store.close()


def test_the_server_knows_cheaply_when_there_is_nothing_to_take_in(tmp_path: Path) -> None:
    """summary_work (checked before the summary, and numpy, are imported): nothing on a fresh
    store, something once facts arrive, nothing once they are taken in, something again after."""
    rng = random.Random(5)
    store = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")
    )

    def work() -> bool:
        with store.session() as s:
            return summary_work(s)

    try:
        assert not work()
        _service_ids(store)
        _write(store, _history(rng, START, 10, "a"))
        assert work()
        summary.keep_current(store)
        assert not work()
        _write(store, _history(rng, START + dt.timedelta(days=10), 2, "b"))
        assert work()
        summary.keep_current(store)
        assert not work()
    finally:
        store.close()


def test_facts_dated_out_of_any_report_range_neither_break_nor_slow_the_summary(
    tmp_path: Path,
) -> None:
    """An import may carry a typo like year 1 or 9999 (the API fuzzing found it): the summary
    skips those days instead of failing on date arithmetic, and reports stay exact."""
    rng = random.Random(9)
    store = open_store(
        StoreSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'conveyor.db'}")
    )
    try:
        _service_ids(store)
        facts = _history(rng, START, 10, "a")
        odd = [
            replace(
                facts[0],
                id="year-1",
                started_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                finished_at=dt.datetime(1, 1, 1, 0, 5, tzinfo=dt.UTC),
            ),
            replace(
                facts[0],
                id="year-9999",
                started_at=dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
                finished_at=dt.datetime(9999, 12, 31, 0, 5, tzinfo=dt.UTC),
            ),
        ]
        _write(store, facts + odd)
        summary.keep_current(store)
        window = Window(dt.date(2024, 1, 1), dt.date(2024, 2, 1))
        _same(
            summary.report(store, window, Settings()).to_json(),
            engine_report(store, window, Settings()).to_json(),
        )
    finally:
        store.close()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "0001-01-01", "to": "2000-01-01"}, "out of range"),
        ({"since": "99999999999d"}, "longer than any report"),
        ({"to": "9999-12-31"}, "out of range"),
    ],
)
def test_windows_out_of_range_are_refused_with_the_range(
    params: dict[str, str], message: str
) -> None:
    with pytest.raises(ConveyorError, match=message):
        from_params(params)
