"""A log read page by page: every page comes from a range of the (job_id, id) index after its
cursor, whatever the page's place in the log, so each page costs the same (issue 16, item 3).

A run with two jobs writes interleaved lines (with another run's lines among them) through
JobRecorder; every statement log_page sends for the first, a middle and the last page is
captured as sent and asked for its plan: EXPLAIN QUERY PLAN on SQLite (no SCAN of log_lines,
no temporary B-tree for ORDER BY), EXPLAIN on PostgreSQL after ANALYZE with sequential scans
priced out (no Seq Scan of log_lines, no Sort)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select
from tests.logwriter import LoggedRun
from tests.plans import captured, faults, plan_steps
from tests.server.conftest import API, Api, Serve
from tests.server.test_server_api import assert_error

from conveyor.server.app import ServerConfig
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Job, LogLine
from conveyor.views.runs import log_page, run_jobs

PAGE = 50


def _plan_faults(store: Store, statement: str, params: Any) -> list[str]:
    """What in the statement's plan reads log_lines whole or sorts it."""
    if "log_lines" not in statement:
        return []
    steps = plan_steps(store, statement, params, priced_out=("seqscan",))
    if store.engine.dialect.name == "sqlite":
        return [s for s in steps if s.startswith("SCAN log_lines") or "TEMP B-TREE" in s]
    return [s for s in steps if s == "Seq Scan log_lines" or s.endswith("Sort")]


def _written(store: Store) -> int:
    """A run whose two jobs write 5 × 40 interleaved lines, another run writing among them."""
    run = LoggedRun(store, ["build", "test"])
    other = LoggedRun(store, ["lint"], service="web")
    for batch in range(5):
        run.write("build", [f"build {batch}.{i}" for i in range(40)])
        other.write("lint", [f"lint {batch}.{i}" for i in range(40)])
        run.write("test", [f"test {batch}.{i}" for i in range(40)])
    run.finish()
    other.finish()
    return run.id


def test_every_page_of_a_log_is_read_through_the_index(tmp_path: Path, database_url: str) -> None:
    store = open_store(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        run_id = _written(store)
        jobs = run_jobs(store, run_id)
        pages: list[list[dict[str, Any]]] = []
        cursor, ended = 0, False
        with captured(store) as sent:
            while not ended:
                lines, ended = log_page(store, run_id, jobs, cursor, PAGE)
                pages.append(lines)
                cursor = lines[-1]["id"] if lines else cursor
            log_page(store, run_id, {k: v for k, v in jobs.items() if v == "test"}, 0, PAGE)
        # The pages hold the run's lines once each, in the order they were written.
        texts = [line["text"] for page in pages for line in page]
        assert texts == [
            f"{job} {batch}.{i}"
            for batch in range(5)
            for job in ("build", "test")
            for i in range(40)
        ]
        # 400 lines: eight full pages, then an empty one that says the run has ended.
        assert [len(p) for p in pages] == [PAGE] * 8 + [0]
        found = faults(store, sent, lambda s, p: _plan_faults(store, s, p))
        assert not found, "\n".join(f"{s}: {f}" for s, f in found.items())
    finally:
        store.close()


def _times(store: Store, run_id: int, job: str) -> list[dt.datetime]:
    """When the job's lines were recorded, as the store holds them."""
    with store.session() as session:
        return list(
            session.scalars(
                select(LogLine.ts)
                .join(Job)
                .where(Job.run_id == run_id, Job.name == job)
                .order_by(LogLine.id)
            )
        )


def _two_attempts(store: Store) -> int:
    """build writes, is leased again (its runner was lost) and writes again; test writes
    meanwhile; the run ends."""
    run = LoggedRun(store, ["build", "test"])
    run.write("build", ["fetching sources", "compiling"])
    run.write("test", ["collecting 3 tests"])
    run.lease_again("build")
    run.write("build", ["fetching sources", "compiling", "built"])
    run.write("test", ["3 passed"], step=1)
    run.finish()
    return run.id


def test_a_log_downloads_as_text_job_by_job_with_each_attempt_named(serve: Serve) -> None:
    async def body(api: Api) -> None:
        run_id = _two_attempts(api.store)
        r = await api.get(f"/runs/{run_id}/logs/raw")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-disposition"] == f'attachment; filename="run-{run_id}.log"'
        assert r.text == (
            "==> build, attempt 1 <==\n"
            "fetching sources\ncompiling\n"
            "==> build, attempt 2 <==\n"
            "fetching sources\ncompiling\nbuilt\n"
            "==> test, attempt 1 <==\n"
            "collecting 3 tests\n3 passed\n"
        )
        r = await api.get(f"/runs/{run_id}/logs/raw", params={"job": "test"})
        assert r.headers["content-disposition"] == f'attachment; filename="run-{run_id}-test.log"'
        assert r.text == "==> test, attempt 1 <==\ncollecting 3 tests\n3 passed\n"

        # The JSON pages carry the same lines, each with its attempt and its time, in UTC as
        # it was recorded.
        page = (await api.get(f"/runs/{run_id}/logs", params={"job": "build"})).json()
        times = [dt.datetime.fromisoformat(line["ts"]) for line in page["lines"]]
        assert times == _times(api.store, run_id, "build")
        assert all(line["ts"].endswith("Z") for line in page["lines"])
        assert [(line["attempt"], line["text"]) for line in page["lines"]] == [
            (1, "fetching sources"),
            (1, "compiling"),
            (2, "fetching sources"),
            (2, "compiling"),
            (2, "built"),
        ]

        # The same credentials as the JSON log; clear errors, no traceback.
        r = await api.client.get(f"{API}/runs/{run_id}/logs/raw")
        assert_error(r, 401, "unauthorized", "token")
        r = await api.get(f"/runs/{run_id}/logs/raw", token=api.token("runner"))
        assert_error(r, 403, "forbidden", "read scope")
        r = await api.get(f"/runs/{run_id}/logs/raw", params={"job": "deploy"})
        assert_error(r, 404, "not_found", f"run {run_id} has no job 'deploy'")
        assert_error(await api.get(f"/runs/{run_id + 100}/logs/raw"), 404, "not_found")

    serve(body, ServerConfig(runner_slots=0))


def test_large_answers_are_compressed_and_event_streams_are_not(serve: Serve) -> None:
    async def body(api: Api) -> None:
        run = LoggedRun(api.store, ["build"])
        texts = [f"compiling module_{i}.py ... ok" for i in range(3000)]
        run.write("build", texts)
        run.finish()
        gzip = api.auth(api.admin) | {"Accept-Encoding": "gzip"}
        for path in (f"/runs/{run.id}/logs", f"/runs/{run.id}/logs/raw"):
            r = await api.client.get(API + path, headers=gzip)
            assert r.status_code == 200
            assert r.headers["content-encoding"] == "gzip"
            # What came over the wire is a fraction of what it unpacks to.
            assert r.num_bytes_downloaded * 4 < len(r.content)
        r = await api.client.get(f"{API}/runs/{run.id}/logs", headers=gzip)
        assert [line["text"] for line in r.json()["lines"]] == texts
        # Small answers go as they are; so does a client that does not ask for gzip.
        r = await api.client.get(f"{API}/health", headers=gzip)
        assert "content-encoding" not in r.headers
        identity = api.auth(api.admin) | {"Accept-Encoding": "identity"}
        r = await api.client.get(f"{API}/runs/{run.id}/logs/raw", headers=identity)
        assert "content-encoding" not in r.headers
        assert r.text.splitlines()[1:] == texts
        # Server-sent events are never held back to be compressed.
        r = await api.client.get(f"{API}/runs/{run.id}/logs/stream", headers=gzip)
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in r.headers
        assert r.text.count("event: line") == len(texts)
        assert "event: end" in r.text

    serve(body, ServerConfig(runner_slots=0))
