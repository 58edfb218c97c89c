"""CDEvents as CloudEvents, to real HTTP sinks on 127.0.0.1: a real run and a real production
deployment on an in-process server, an incident opened and resolved; the structured-mode
content type and envelope; ids unique and the same after a restart of the sender (which sends
nothing twice: its cursor is in the store); a sink that fails is retried, one that keeps
failing is given up on and recorded, and neither holds the others back."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from conveyor.delivery.cdevents import (
    CURSOR,
    CDEventsSender,
    LogEvent,
    Mapper,
    artifact_id,
    sink_key,
)
from conveyor.engine.incidents import open_incident, resolve_incident
from conveyor.server.app import ServerConfig
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import (
    Deployment,
    Event,
    EventCursor,
    Incident,
    Release,
    Run,
    Service,
    utcnow,
)
from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.server import conftest as server
from tests.server.conftest import Api, Serve, until
from tests.serverproc import ServerProcess
from tests.serverproc import until as until_sync

# The in-process server fixture (the app, its loops and a store: SQLite, and PostgreSQL).
serve = server.serve

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
PIPELINE = f"""
service: shop
jobs:
  test:
    run: "true"
environments:
  production:
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
"""


class Sink:
    """A real HTTP receiver on 127.0.0.1. ``status(n)`` answers the n-th request (0-based);
    ``hold`` makes every request wait until the sink is closed (a sink that hangs)."""

    def __init__(self, status: Callable[[int], int] = lambda n: 202, hold: bool = False) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answered: list[int] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hold:
                    outer._closing.wait(60)
                with outer._lock:
                    code = status(len(outer.answered))
                    outer.answered.append(code)
                    if 200 <= code < 300:
                        outer.requests.append((dict(self.headers.items()), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that gave up on a hanging request closed the connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events?token=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(autouse=True)
def no_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources and links as they are without CONVEYOR_BASE_URL (tests that want one pass it)."""
    monkeypatch.delenv("CONVEYOR_BASE_URL", raising=False)


@pytest.fixture
def sinks() -> Iterator[Callable[..., Sink]]:
    made: list[Sink] = []

    def make(*args: Any, **kwargs: Any) -> Sink:
        made.append(Sink(*args, **kwargs))
        return made[-1]

    yield make
    for sink in made:
        sink.close()


def short(type_: str) -> str:
    """dev.cdevents.pipelinerun.started.0.2.0 -> pipelinerun.started"""
    return ".".join(type_.split(".")[2:4])


def check_envelope(headers: dict[str, str], event: dict[str, Any]) -> None:
    """A CloudEvent 1.0 in HTTP structured mode whose data is a CDEvent 0.4.1."""
    assert headers["Content-Type"] == CONTENT_TYPE
    assert event["specversion"] == "1.0"
    assert event["type"].startswith("dev.cdevents.")
    assert event["type"].endswith(".0.2.0")
    assert event["source"] == "/conveyor"
    assert event["datacontenttype"] == "application/json"
    cdevent = event["data"]
    context, subject = cdevent["context"], cdevent["subject"]
    assert context["version"] == "0.4.1"
    assert (context["id"], context["source"], context["type"]) == (
        event["id"],
        event["source"],
        event["type"],
    )
    assert context["timestamp"] == event["time"]
    assert event["time"].endswith("Z")
    assert subject["id"] == event["subject"]
    assert subject["type"] in {"pipelineRun", "taskRun", "service", "incident"}
    assert cdevent["customDataContentType"] == "application/json"


# --- the whole flow on a real server ----------------------------------------------------------


@pytest.mark.integration
def test_a_run_a_deployment_and_an_incident_reach_every_sink_once(
    serve: Serve, repo: GitRepo, sinks: Callable[..., Sink]
) -> None:
    good = sinks()
    flaky = sinks(status=lambda n: 503 if n < 2 else 202)  # down for its first two requests
    repo.commit("v1", {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": PIPELINE})
    stores: list[Store] = []
    expected = [
        "pipelinerun.queued",
        "pipelinerun.started",
        "taskrun.started",
        "taskrun.finished",
        "pipelinerun.finished",
        "service.deployed",
        "incident.detected",
        "incident.resolved",
    ]

    async def body(api: Api) -> None:
        stores.append(api.store)
        await api.register("shop", repo.path)
        run = await api.trigger("shop")
        assert (await api.wait_run(run["id"]))["status"] == "succeeded"

        async def deployed() -> bool:
            found = (await api.get("/deployments", params={"service": "shop"})).json()
            return [d["status"] for d in found] == ["succeeded"]

        await until(deployed, 30, "the deployment of release 1 to succeed")
        with api.store.write() as w:
            shop = w.session.scalars(select(Service).where(Service.name == "shop")).one()
            incident = open_incident(
                w, service_id=shop.id, environment="production", title="5xx on /", source="cli"
            )
        with api.store.write() as w:
            resolve_incident(w, w.session.get_one(Incident, incident.id), "fixed by hand")

        async def everywhere() -> bool:
            return all(len(s.requests) >= len(expected) for s in (good, flaky))

        await until(everywhere, 30, "every CDEvent at both sinks")

    try:
        serve(body, ServerConfig(runner_slots=2, cdevents_sinks=(good.url, flaky.url)))
    finally:
        stop_released_processes(repo.path.parent / "home")

    for sink in (good, flaky):
        assert [short(t) for t in sink.types()] == expected
        for headers, raw in sink.requests:
            check_envelope(headers, json.loads(raw))
    assert flaky.answered[:3] == [503, 503, 202]  # retried until it took it
    assert good.events() == flaky.events()  # the same events, ids and all

    events = {short(e["type"]): e for e in good.events()}
    ids = [e["id"] for e in good.events()]
    assert len(set(ids)) == len(ids)
    run, task = events["pipelinerun.finished"]["data"], events["taskrun.finished"]["data"]
    assert run["subject"]["id"] == "runs/1"
    assert run["subject"]["content"]["pipelineName"] == "shop"
    assert run["subject"]["content"]["outcome"] == "success"
    assert run["subject"]["content"]["url"] == "/api/v1/runs/1"
    assert task["subject"]["content"]["taskName"] == "test"
    assert task["subject"]["content"]["pipelineRun"] == {"id": "runs/1", "source": "/conveyor"}
    deployed = events["service.deployed"]["data"]
    assert deployed["subject"]["id"] == "services/shop"
    assert deployed["subject"]["content"]["environment"]["id"] == "production"
    assert deployed["subject"]["content"]["artifactId"].startswith("pkg:generic/shop@r1-")
    assert deployed["customData"]["tier"] == "production"
    detected = events["incident.detected"]["data"]
    assert detected["subject"]["content"]["description"] == "5xx on /"
    assert detected["subject"]["content"]["service"]["id"] == "services/shop"
    # One chain from the run to its deployment.
    assert run["context"]["chainId"] == deployed["context"]["chainId"]

    # A restart: a new sender on the same store sends nothing again (its cursor is stored)...
    store = stores[0]
    restarted = CDEventsSender(store, [good.url, flaky.url])
    asyncio.run(restarted.drain())
    assert len(good.requests) == len(flaky.requests) == len(expected)
    with store.session() as session:
        cursors = dict(session.execute(select(EventCursor.name, EventCursor.last_event_id)).all())
        last = session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
    assert cursors[sink_key(good.url)] == cursors[sink_key(flaky.url)] == cursors[CURSOR] == last
    assert "token=abc" not in json.dumps(list(cursors))  # URLs (and their credentials) aren't

    # ... and what comes next carries the ids the mapping always gives.
    with store.write() as w:
        shop = w.session.scalars(select(Service).where(Service.name == "shop")).one()
        open_incident(w, service_id=shop.id, environment=None, title="again", source="cli")
    asyncio.run(restarted.drain())
    assert [short(t) for t in good.types()] == [*expected, "incident.detected"]
    with store.session() as session:
        mapper = Mapper()
        again = [
            mapper.map(session, LogEvent.of(row))
            for row in session.execute(select(Event).order_by(Event.id)).scalars()
        ]
    assert [e["id"] for e in again if e is not None] == [e["id"] for e in good.events()]
    # An incident without an environment is production's (incidents are production failures).
    assert good.events()[-1]["data"]["subject"]["content"]["environment"]["id"] == "production"


# --- sinks that fail ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Any, database_url: str) -> Iterator[Store]:
    s = open_store(Settings(home=tmp_path / "home", database_url=database_url))
    yield s
    s.close()


def some_runs(store: Store, count: int) -> None:
    """``count`` runs that were queued, started and finished (events only)."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for run in range(1, count + 1):
        for kind, data in (
            ("pipelinerun.queued", {}),
            ("pipelinerun.started", {}),
            ("log.appended", {}),  # not a CDEvent: skipped, and the cursor moves past it
            ("pipelinerun.finished", {"status": "failed", "reason": "test failed"}),
        ):
            rows.append({"ts": now, "type": kind, "service": "api", "run_id": run, "data": data})
    with store.write() as w:
        w.session.execute(insert(Event), rows)


def test_a_sink_that_hangs_or_refuses_holds_no_other_back(
    store: Store, sinks: Callable[..., Sink]
) -> None:
    good = sinks()
    hanging = sinks(hold=True)
    refusing = sinks(status=lambda n: 500)
    some_runs(store, 3)

    async def scenario() -> None:
        sender = CDEventsSender(
            store,
            [good.url, hanging.url, refusing.url],
            attempts=3,
            backoff=0.01,
            timeout=30,
            poll_seconds=0.05,
        )
        task = asyncio.create_task(sender.serve())
        try:

            async def delivered() -> bool:
                return len(good.requests) == 9 and len(refusing.answered) == 27

            await until(delivered, 20, "9 events at the good sink, 3 tries each at the other")
            # The hanging sink still holds its first request: it delayed nobody.
            assert hanging.answered == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    outcomes = [e["data"]["subject"]["content"].get("outcome") for e in good.events()]
    assert outcomes == [None, None, "failure"] * 3
    assert good.events()[2]["data"]["subject"]["content"]["errors"] == "test failed"
    # Each event the refusing sink never took is recorded, and its cursor went past them all.
    with store.session() as session:
        dropped = session.scalars(
            select(Event).where(Event.type == "cdevents.dropped").order_by(Event.id)
        ).all()
        cursors = dict(session.execute(select(EventCursor.name, EventCursor.last_event_id)).all())
    assert len(dropped) == 9
    assert {d.data["sink"] for d in dropped} == {refusing.url.split("/")[2]}
    assert all(d.data["attempts"] == 3 and "HTTP 500" in d.data["error"] for d in dropped)
    assert [d.data["id"] for d in dropped] == [e["id"] for e in good.events()]
    # Both went past every run event (and on, past the records of what was dropped).
    assert cursors[sink_key(good.url)] >= 12
    assert cursors[sink_key(refusing.url)] >= 12
    # The hanging one got nowhere; the overall cursor waits for the slowest sink.
    assert cursors.get(sink_key(hanging.url), 0) == 0
    assert cursors[CURSOR] == 0


def test_a_refused_event_is_not_retried(store: Store, sinks: Callable[..., Sink]) -> None:
    """A 4xx answer will not get better by itself: one attempt, recorded, next event."""
    gone = sinks(status=lambda n: 410 if n == 0 else 202)
    some_runs(store, 1)
    asyncio.run(CDEventsSender(store, [gone.url], attempts=5, backoff=0.01).drain())
    assert gone.answered == [410, 202, 202]
    assert [short(t) for t in gone.types()] == ["pipelinerun.started", "pipelinerun.finished"]


# --- the mapping -------------------------------------------------------------------------------


def test_deployments_map_to_deployed_upgraded_and_rolledback(store: Store) -> None:
    now = utcnow()
    with store.write() as w:
        svc = Service(name="shop", repository="/nowhere", created_at=now)
        w.session.add(svc)
        w.session.flush()
        releases = []
        for n, publication in enumerate(
            (
                {},
                {
                    "status": "published",
                    "reference": "127.0.0.1:5000/team/shop:r2-bbbbbbb",
                    "digest": "sha256:" + "d" * 64,
                },
            )
        ):
            run = Run(service_id=svc.id, status="succeeded", sha=f"{n}" * 40, trigger="push",
                      created_at=now)  # fmt: skip
            w.session.add(run)
            w.session.flush()
            release = Release(service_id=svc.id, run_id=run.id, sha=run.sha, created_at=now,
                              publication=publication)  # fmt: skip
            w.session.add(release)
            w.session.flush()
            releases.append(release)
        deployments = [
            Deployment(service_id=svc.id, environment="production", tier="production",
                       release_id=releases[0].id, kind="deploy", status="succeeded",
                       trigger="auto"),
            Deployment(service_id=svc.id, environment="production", tier="production",
                       release_id=releases[1].id, kind="deploy", status="succeeded",
                       trigger="auto", previous_release_id=releases[0].id),
            Deployment(service_id=svc.id, environment="production", tier="production",
                       release_id=releases[0].id, kind="rollback", status="succeeded",
                       trigger="rollback", previous_release_id=releases[1].id, rollback_of=2),
            # A container target ran an image: that image is what was deployed.
            Deployment(service_id=svc.id, environment="staging", tier="staging",
                       release_id=releases[1].id, kind="deploy", status="succeeded",
                       trigger="auto", previous_release_id=releases[0].id,
                       instance={"image": "127.0.0.1:5000/team/web:r2",
                                 "pinned": "127.0.0.1:5000/team/web@sha256:" + "f" * 64}),
        ]  # fmt: skip
        w.session.add_all(deployments)
        w.session.flush()
        for dep in deployments:
            w.emit("deployment.succeeded", service="shop", deployment=dep.id, kind=dep.kind)
        # Events with no CDEvents counterpart (in spec 0.4) map to nothing.
        w.emit("deployment.failed", service="shop", deployment=deployments[1].id)
        w.emit("approval.requested", service="shop", approval=1)
        w.emit("taskrun.finished", service="shop", run_id=1, job_id=1, status="skipped")
    mapper = Mapper(base_url="https://conveyor.example.com/")
    with store.session() as session:
        rows = session.scalars(select(Event).order_by(Event.id)).all()
        mapped = [mapper.map(session, LogEvent.of(row)) for row in rows]
    assert [m["type"] if m else None for m in mapped] == [
        "dev.cdevents.service.deployed.0.2.0",
        "dev.cdevents.service.upgraded.0.2.0",
        "dev.cdevents.service.rolledback.0.2.0",
        "dev.cdevents.service.upgraded.0.2.0",
        None,
        None,
        None,
    ]
    first, upgraded, _, container = (m for m in mapped if m)
    assert container["data"]["subject"]["content"]["artifactId"] == (
        "pkg:oci/web@sha256%3A" + "f" * 64 + "?repository_url=127.0.0.1:5000/team/web"
    )
    assert first["source"] == "https://conveyor.example.com"
    assert first["data"]["subject"]["content"]["artifactId"] == "pkg:generic/shop@r1-0000000"
    assert upgraded["data"]["subject"]["content"]["artifactId"] == (
        "pkg:oci/shop@sha256%3A" + "d" * 64 + "?repository_url=127.0.0.1:5000/team/shop"
    )
    assert upgraded["data"]["customData"]["link"] == (
        "https://conveyor.example.com/api/v1/deployments/2"
    )


def test_package_urls() -> None:
    assert artifact_id("Shop API", "r3-abc", {}) == "pkg:generic/Shop%20API@r3-abc"
    assert artifact_id("shop", "r3-abc", {"status": "failed", "reference": "x"}) == (
        "pkg:generic/shop@r3-abc"
    )
    published = {
        "status": "published",
        "reference": "ghcr.io/acme/Shop@sha256:" + "e" * 64,
        "digest": "sha256:" + "e" * 64,
    }
    assert artifact_id("shop", "r3-abc", published) == (
        "pkg:oci/shop@sha256%3A" + "e" * 64 + "?repository_url=ghcr.io/acme/Shop"
    )


# --- `conveyor server --cdevents-sink` -----------------------------------------------------------


@pytest.mark.integration
def test_conveyor_server_sends_to_the_sinks_it_is_given(
    tmp_path: Path, sinks: Callable[..., Sink], conveyor: Conveyor
) -> None:
    """The real command, sinks from CONVEYOR_CDEVENTS_SINKS (comma-separated): an incident
    recorded by another process reaches both (the sender polls for other processes' events)."""
    first, second = sinks(), sinks()
    process = ServerProcess(tmp_path / "server-home")
    process.env["CONVEYOR_CDEVENTS_SINKS"] = f"{first.url}, {second.url}"
    process.start()
    try:
        home = tmp_path / "server-home"
        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
        try:
            with store.write() as w:
                svc = Service(name="shop", repository="/nowhere", created_at=utcnow())
                w.session.add(svc)
                w.session.flush()
                open_incident(w, service_id=svc.id, environment=None, title="down", source="cli")
        finally:
            store.close()
        until_sync(lambda: first.requests and second.requests, 20, "the incident at both sinks")
    finally:
        process.stop()
    assert first.types() == second.types() == ["dev.cdevents.incident.detected.0.2.0"]
    assert process.process is not None
    assert "CDEvents to 127.0.0.1:" in process.process.stderr()
    assert "token=abc" not in process.process.stderr()

    # A sink that is not an http(s) URL is refused before anything starts.
    out = conveyor("server", "--port", "0", "--cdevents-sink", "ftp://sink.example.com/x")
    assert out.returncode == 2
    assert "'ftp://sink.example.com/x' is not an http(s) URL" in out.stderr
