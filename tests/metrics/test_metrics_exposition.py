"""GET /metrics on a real server (the app in-process, its loops running, a real store): a run of
a real commit, deployment facts with their commits, an incident, a deployment in progress and
approval waits, scraped and parsed with prometheus_client's own parser, values checked exactly.
Also: the reader of the append-only tables (`Tail`) and the optional scrape token."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import insert, select

from conveyor.engine.incidents import open_incident, resolve_incident
from conveyor.engine.promotion import env_row
from conveyor.facts import Change, DeploymentFact
from conveyor.metrics.exposition import RESOLUTION_BUCKETS
from conveyor.metrics.families import Family, Recovery
from conveyor.server.app import ServerConfig
from conveyor.store.db import Store
from conveyor.store.facts import write_fact
from conveyor.store.models import Deployment, Event, Incident, Release, Service, utcnow
from conveyor.store.tail import Tail
from tests.conftest import GitRepo
from tests.server import conftest as server
from tests.server.conftest import Api, Serve, until

# The in-process server fixture (the app, its loops and a store: SQLite, and PostgreSQL).
serve = server.serve

PIPELINE = """\
service: shop
jobs:
  build:
    run: 'true'
  test:
    needs: [build]
    run: 'true'
"""
CONFIG = ServerConfig(runner_slots=2, delivery=False)


def parse(text: str) -> dict[str, list[Sample]]:
    """Samples by sample name (``x_total``, ``x_bucket``...), from the text format."""
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0].value)


def buckets(samples: dict[str, list[Sample]], name: str, **labels: str) -> dict[str, float]:
    return {
        s.labels["le"]: s.value
        for s in samples.get(f"{name}_bucket", [])
        if labels.items() <= s.labels.items()
    }


async def scrape(api: Api, **headers: str) -> dict[str, list[Sample]]:
    r = await api.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def at(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


NOW = utcnow().replace(microsecond=0)


def production_fact(
    key: str,
    environment: str,
    *,
    started: float = 2,
    finished: float = 1,
    changes: tuple[Change, ...] = (Change("c" * 40, committed_at=at(30)),),
) -> DeploymentFact:
    """A successful production deployment of shop, its times in minutes before NOW."""
    return DeploymentFact(
        id=key,
        service="shop",
        environment=environment,
        tier="production",
        kind="deploy",
        result="succeeded",
        sha="a" * 40,
        started_at=at(started),
        finished_at=at(finished),
        changes=changes,
    )


def record_facts(store: Store) -> None:
    """A first production deployment bringing three commits (one far beyond the look-back), a
    failed one, a rollback and a staging deployment, as an import would write them."""
    facts = [
        production_fact(
            "t:1",
            "production",
            started=10,
            changes=(
                Change("c1", committed_at=at(5 + 30)),  # 30 min before the deployment ended
                Change("c2", committed_at=at(5 + 180)),  # 3 h
                Change("c3", committed_at=at(5 + 400 * 24 * 60)),  # 400 days: first deployment
            ),
            finished=5,
        ),
        DeploymentFact(
            id="t:2",
            service="shop",
            environment="production",
            tier="production",
            kind="deploy",
            result="rolled_back",
            sha="b" * 40,
            started_at=at(4),
            finished_at=at(3),
            failed_at=at(3.5),
        ),
        DeploymentFact(
            id="t:3",
            service="shop",
            environment="production",
            tier="production",
            kind="rollback",
            result="succeeded",
            sha="a" * 40,
            started_at=at(3),
            finished_at=at(2),
            rollback_of="t:2",
        ),
        DeploymentFact(
            id="t:4",
            service="shop",
            environment="staging",
            tier="staging",
            kind="deploy",
            result="succeeded",
            sha="b" * 40,
            started_at=at(20),
            finished_at=at(19),
            changes=(Change("c4", committed_at=at(60)),),  # not production: no lead time
        ),
    ]
    with store.write() as w:
        for fact in facts:
            write_fact(w, fact, source="import")


def approval_events(store: Store) -> None:
    """An approval gate decided 10 minutes after it was asked for, and one withdrawn."""
    rows: list[dict[str, Any]] = [
        {"ts": at(30), "type": "approval.requested", "service": "shop",
         "data": {"approval": 901, "environment": "production", "kind": "approval"}},
        {"ts": at(20), "type": "approval.approved", "service": "shop",
         "data": {"approval": 901}},
        {"ts": at(15), "type": "approval.requested", "service": "shop",
         "data": {"approval": 902, "environment": "production", "kind": "approval"}},
        {"ts": at(14), "type": "approval.withdrawn", "service": "shop",
         "data": {"approval": 902}},
    ]  # fmt: skip
    with store.write() as w:
        w.session.execute(insert(Event), rows)


def deployment_in_progress(store: Store, started: dt.datetime) -> None:
    """A production deployment of the run's release that has been checking since ``started``
    (no controller runs in this server, so it stays there)."""
    with store.write() as w:
        release = w.session.scalars(select(Release)).one()
        w.session.add(
            Deployment(
                service_id=release.service_id,
                environment="production",
                tier="production",
                release_id=release.id,
                kind="deploy",
                status="checking",
                trigger="manual",
                created_at=started - dt.timedelta(minutes=1),
                started_at=started,
            )
        )


def test_metrics_of_a_run_deployments_an_incident_and_approvals(
    serve: Serve, repo: GitRepo
) -> None:
    repo.commit("v1", {"conveyor.yml": PIPELINE})

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        run = await api.trigger("shop")
        assert (await api.wait_run(run["id"]))["status"] == "succeeded"
        record_facts(api.store)
        approval_events(api.store)
        started = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
        deployment_in_progress(api.store, started)
        with api.store.write() as w:
            shop = w.session.scalars(select(Service).where(Service.name == "shop")).one()
            open_incident(
                w,
                service_id=shop.id,
                environment="production",
                title="5xx above 1% on shop",
                source="cli",
            )

        m = await scrape(api)

        assert value(m, "conveyor_build_info") == 1
        assert value(m, "conveyor_metrics_history_complete") == 1
        # The run: one, succeeded, and its two jobs; each waited in a queue and was timed.
        assert value(m, "conveyor_runs_finished_total", service="shop", status="succeeded") == 1
        assert value(m, "conveyor_run_duration_seconds_count", service="shop") == 1
        assert value(m, "conveyor_run_duration_seconds_sum", service="shop") >= 0
        assert value(m, "conveyor_run_queue_wait_seconds_count", service="shop") == 1
        assert value(m, "conveyor_jobs_finished_total", service="shop", status="succeeded") == 2
        assert value(m, "conveyor_job_duration_seconds_count", service="shop") == 2
        assert value(m, "conveyor_job_queue_wait_seconds_count", service="shop") == 2
        assert value(m, "conveyor_runs_in_progress", service="shop", status="running") == 0
        assert value(m, "conveyor_runs_in_progress", service="shop", status="queued") == 0

        # Deployments by service, environment, tier, kind, result, served and source (the
        # imported facts do not say when they began serving: they count as having served).
        production = {"service": "shop", "environment": "production", "tier": "production"}
        deploys = {**production, "kind": "deploy", "source": "import", "served": "true"}
        assert value(m, "conveyor_deployments_total", **deploys, result="succeeded") == 1
        assert value(m, "conveyor_deployments_total", **deploys, result="rolled_back") == 1
        rollbacks = {**production, "kind": "rollback", "source": "import"}
        assert value(m, "conveyor_deployments_total", **rollbacks, result="succeeded") == 1
        staging = [s for s in m["conveyor_deployments_total"] if s.labels["tier"] == "staging"]
        assert sum(s.value for s in staging) == 1
        assert sum(s.value for s in m["conveyor_deployments_total"]) == 4
        # Their durations: 5 min, 1 min and 1 min (how each ended is on the counter).
        assert value(m, "conveyor_deployment_duration_seconds_count", **production) == 3
        assert value(m, "conveyor_deployment_duration_seconds_sum", **production) == 420

        # Recovery: t:2 failed at 3.5 min ago, its rollback was healthy 2 min ago (its fact
        # came after the failure's: the failure waited for it).
        assert value(m, "conveyor_deployment_recovery_seconds_count", **production) == 1
        assert value(m, "conveyor_deployment_recovery_seconds_sum", **production) == 90
        staging_env = {"service": "shop", "environment": "staging", "tier": "staging"}
        assert value(m, "conveyor_deployment_recovery_seconds_count", **staging_env) == 0

        # Lead time: the production deployment's commits of 30 min and 3 h; the 400-day-old
        # one is beyond the first deployment's look-back, staging's commit is not production's.
        assert value(m, "conveyor_lead_time_seconds_count", service="shop") == 2
        assert value(m, "conveyor_lead_time_seconds_sum", service="shop") == 30 * 60 + 180 * 60
        lead = buckets(m, "conveyor_lead_time_seconds", service="shop")
        assert (lead["900.0"], lead["1800.0"], lead["7200.0"], lead["14400.0"]) == (0, 1, 1, 2)
        assert lead["+Inf"] == 2

        # Approval wait: 10 minutes, approved; the withdrawn one is not a wait that ended.
        wait = {"service": "shop", "environment": "production"}
        assert value(m, "conveyor_approval_wait_seconds_count", **wait) == 1
        assert value(m, "conveyor_approval_wait_seconds_sum", **wait) == 600
        assert sum(s.value for s in m["conveyor_approval_wait_seconds_count"]) == 1
        decided = {**wait, "kind": "approval"}
        assert value(m, "conveyor_approvals_decided_total", **decided, result="approved") == 1
        assert sum(s.value for s in m["conveyor_approvals_decided_total"]) == 1

        # What is in progress: the deployment checking for two hours, the open incident.
        assert value(m, "conveyor_deployments_in_progress", **production, status="checking") == 1
        oldest = value(
            m, "conveyor_deployment_oldest_start_time_seconds", **production, status="checking"
        )
        assert oldest == started.timestamp()
        assert value(m, "conveyor_incidents_open", **production) == 1
        assert value(m, "conveyor_incidents_opened_total", service="shop") == 1
        # The server's own process is there too (its registry is not the global one).
        assert value(m, "process_resident_memory_bytes") > 0

        # The incident is resolved: the gauge drops, its resolution time is observed.
        with api.store.write() as w:
            incident = w.session.scalars(select(Incident)).one()
            resolve_incident(w, incident, "rolled back by hand")

        async def resolved() -> dict[str, list[Sample]] | None:
            m = await scrape(api)
            resolved = value(m, "conveyor_incident_resolution_seconds_count", service="shop")
            return m if resolved == 1 else None

        m = await until(resolved, 10, "the incident's resolution in /metrics")
        assert "conveyor_incidents_open" not in m
        assert value(m, "conveyor_runs_finished_total", service="shop", status="succeeded") == 1

    serve(body, CONFIG)


def test_openmetrics_when_asked_and_the_optional_token(serve: Serve) -> None:
    async def body(api: Api) -> None:
        r = await api.client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")

        # As with CONVEYOR_METRICS_TOKEN set (read at start, into the server's settings).
        state = api.app.state.conveyor
        state.settings = dataclasses.replace(state.settings, metrics_token="s3cret-scrape-token")
        r = await api.client.get("/metrics")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "s3cret" not in r.text
        r = await api.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # An API token is not a scrape credential.
        r = await api.client.get("/metrics", headers={"Authorization": f"Bearer {api.admin}"})
        assert r.status_code == 401
        m = await scrape(api, Authorization="Bearer s3cret-scrape-token")
        assert value(m, "conveyor_build_info") == 1

    serve(body, CONFIG)


def test_the_history_is_read_once_then_only_what_is_new(serve: Serve) -> None:
    """A second scrape reads only the rows appended since the first; totals keep growing from
    the store, and a new server (a new collector) reports the same totals."""

    async def body(api: Api) -> None:
        rows: list[dict[str, Any]] = [
            {"ts": at(1), "type": "pipelinerun.finished", "service": "api", "run_id": 7000 + i,
             "data": {"status": "failed", "duration": 2.0}}
            for i in range(3)
        ]  # fmt: skip
        with api.store.write() as w:
            w.session.execute(insert(Event), rows)
        m = await scrape(api)
        assert value(m, "conveyor_runs_finished_total", service="api", status="failed") == 3
        with api.store.write() as w:
            w.session.execute(insert(Event), rows[:2])

        async def five() -> bool:
            m = await scrape(api)
            return value(m, "conveyor_runs_finished_total", service="api", status="failed") == 5

        await until(five, 10, "the new runs in /metrics")

        from prometheus_client import generate_latest

        from conveyor.metrics.exposition import metrics_registry

        fresh = parse(generate_latest(metrics_registry(api.store)).decode())
        assert value(fresh, "conveyor_runs_finished_total", service="api", status="failed") == 5
        assert value(fresh, "conveyor_run_duration_seconds_sum", service="api") == 10.0

    serve(body, CONFIG)


def test_every_series_is_there_at_0_before_its_first_event(serve: Serve, repo: GitRepo) -> None:
    """Prometheus's increase() starts from a series' first sample: a series that first appeared
    at 1 would hide its first event (a week's deployment frequency of 0 after a deployment).
    So every counter and histogram of a known service and environment is exported at 0 before
    anything happened, and a series Conveyor could not foresee (an environment first
    named by an import) is exported at 0 once before its value."""

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        with api.store.write() as w:
            shop = w.session.scalars(select(Service).where(Service.name == "shop")).one()
            env_row(w, shop.id, "production", "production")

        m = await scrape(api)
        deployments = m["conveyor_deployments_total"]
        assert {
            (s.labels["kind"], s.labels["result"], s.labels["served"]) for s in deployments
        } == {
            (kind, result, served)
            for kind in ("deploy", "rollback")
            for result, served in (
                ("succeeded", "true"),
                ("failed", "true"),
                ("failed", "false"),
                ("rolled_back", "true"),
                ("rolled_back", "false"),
            )
        }
        assert {(s.labels["environment"], s.labels["source"], s.value) for s in deployments} == {
            ("production", "conveyor", 0)
        }
        assert value(m, "conveyor_lead_time_seconds_count", service="shop") == 0
        assert buckets(m, "conveyor_lead_time_seconds", service="shop")["+Inf"] == 0
        assert value(m, "conveyor_incidents_opened_total", service="shop") == 0
        assert value(m, "conveyor_incident_resolution_seconds_count", service="shop") == 0
        for status in ("succeeded", "failed", "cancelled", "interrupted"):
            assert value(m, "conveyor_runs_finished_total", service="shop", status=status) == 0
        for status in ("succeeded", "failed", "skipped", "cancelled", "interrupted"):
            assert value(m, "conveyor_jobs_finished_total", service="shop", status=status) == 0
        assert value(m, "conveyor_deployment_recovery_seconds_count", service="shop") == 0
        # The duration, queue and approval histograms too, all their buckets at 0; how things
        # ended is on the counters (an approval's kind and result included).
        production = {"service": "shop", "environment": "production"}
        for name, labels in (
            ("conveyor_run_duration_seconds", {"service": "shop"}),
            ("conveyor_run_queue_wait_seconds", {"service": "shop"}),
            ("conveyor_job_duration_seconds", {"service": "shop"}),
            ("conveyor_job_queue_wait_seconds", {"service": "shop"}),
            ("conveyor_deployment_duration_seconds", {**production, "tier": "production"}),
            ("conveyor_approval_wait_seconds", production),
        ):
            assert value(m, f"{name}_count", **labels) == 0, name
            assert set(buckets(m, name, **labels).values()) == {0}, name
        assert {
            (s.labels["kind"], s.labels["result"], s.value)
            for s in m["conveyor_approvals_decided_total"]
        } == {
            (kind, result, 0)
            for kind in ("approval", "inconclusive")
            for result in ("approved", "rejected", "expired")
        }

        # A production deployment: its series goes from 0 to 1.
        with api.store.write() as w:
            write_fact(w, production_fact("c900", "production"), source="conveyor")
        ok = {"environment": "production", "kind": "deploy", "result": "succeeded"}

        async def deployed() -> bool:
            return value(await scrape(api), "conveyor_deployments_total", **ok) == 1

        await until(deployed, 10, "the deployment in /metrics")

        # An import names an environment Conveyor did not know: its series shows 0 first.
        with api.store.write() as w:
            write_fact(w, production_fact("i:shop:1", "eu"), source="import")
        eu = {"environment": "eu", "result": "succeeded", "source": "import"}
        seen: list[float] = []

        async def counted() -> bool:
            found = [
                s.value
                for s in (await scrape(api)).get("conveyor_deployments_total", [])
                if eu.items() <= s.labels.items() and s.labels["kind"] == "deploy"
            ]
            if found and (not seen or seen[-1] != found[0]):
                seen.append(found[0])
            return seen[-1:] == [1]

        await until(counted, 10, "the import in /metrics")
        assert seen == [0, 1]

    serve(body, CONFIG)


# --- the reader of append-only tables ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def consume(tail: Tail, ids: Iterable[int]) -> list[int]:
    ids = list(ids)
    taken = ids[: tail.settle(ids)]
    if taken:
        tail.advance(taken[-1])
    return taken


def test_tail_waits_at_a_missing_id_then_passes_it_after_the_grace() -> None:
    clock = Clock()
    tail = Tail(grace=10, clock=clock)
    assert consume(tail, [1, 2, 3]) == [1, 2, 3]
    # 5 committed before 4 (PostgreSQL, two writers): stop at 4's gap, for now.
    assert consume(tail, [5, 6]) == []
    assert tail.waiting()
    clock.now += 5
    assert consume(tail, [4, 5, 6]) == [4, 5, 6]  # 4 came: all in order
    assert not tail.waiting()
    # 8 never comes (its transaction was rolled back): passed once the grace is over.
    assert consume(tail, [7, 9]) == [7]
    clock.now += 9.9
    assert consume(tail, [9]) == []
    clock.now += 0.2
    assert consume(tail, [9, 10]) == [9, 10]
    assert not tail.waiting()
    assert tail.position == 10


# --- failed deployment recovery, whatever order the facts come in --------------------------------


def test_recovery_is_measured_to_the_first_healthy_deployment_after_the_failure() -> None:
    """Conveyor writes a rollback's fact before the fact of the deployment it undid; an import
    may write them the other way round. Either way a failure is restored by the first healthy
    deployment of its environment that ended after it, never one that ended before."""
    recovery = Recovery(Family("r", "recovery", ("service",), RESOLUTION_BUCKETS))
    shop, api = ("shop",), ("api",)
    recovery.on_healthy(shop, at(60))  # before the failure: restores nothing
    recovery.on_healthy(shop, at(8))  # the rollback, read first
    recovery.on_failed(shop, at(10))
    recovery.on_failed(api, at(30))  # read before what restored it
    recovery.on_failed(api, at(20))
    assert recovery.family.series.get(api) is None
    recovery.on_healthy(api, at(5))
    assert recovery.family.series[shop].total == 120
    assert recovery.family.series[api].count == 2
    assert recovery.family.series[api].total == 25 * 60 + 15 * 60
    recovery.on_healthy(api, at(1))  # restores nothing more
    assert recovery.family.series[api].count == 2
