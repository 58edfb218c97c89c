"""A 200 MB log read through the API: page by page (`GET /api/v1/runs/{id}/logs`, 10,000
lines a page) and as one raw download (`GET /api/v1/runs/{id}/logs/raw`), plain and gzip.

The log is written through the real tables as a runner's reports are (JobRecorder, in batches
of 10,000 lines, tests/logwriter.py) on a SQLite store; the API is the real app in-process
(httpx.ASGITransport, its lifespan and background loops running). Each page's cost is measured
at the first, middle and last page of the log, with the statement log_page used before the
(job_id, id) index (an IN over the run's two jobs ordered by id) beside it for the same pages.

Target (issue 16, item 3): a page costs the same wherever it is; the whole log read through
the API in ≤ 10 s. `LOG_READ_MB` sets the size (default 200).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.logwriter import LoggedRun

from conveyor.server.app import ServerConfig, create_app
from conveyor.server.tokens import create_token
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import LogLine

PAGE = 10_000
BATCH = 10_000
# The run's other job writes this many lines first.
TEST_LINES = 100
REPEATS = 5
# The statement before sorts the whole log for each page: fewer repeats of it.
BEFORE_REPEATS = 3
TARGET_SECONDS = 10.0
API = "http://conveyor/api/v1"


def _line(i: int) -> str:
    """100 bytes with its newline, varied like a build's output (gzip has real work to do)."""
    text = f"{i:09d} [step {i % 7}] compiling src/module_{i * 7919 % 4093}.py ... ok ({i % 997}ms)"
    return text.ljust(99, ".")


def _write(store: Store, lines: int) -> tuple[int, list[int]]:
    """The run (two jobs: build writes the whole log after test's 100 lines) and the cursors
    of the first, middle and last page of build's lines."""
    run = LoggedRun(store, ["build", "test"])
    run.write("test", [f"test {i} passed" for i in range(TEST_LINES)])
    for start in range(0, lines, BATCH):
        run.write("build", [_line(i) for i in range(start, min(start + BATCH, lines))])
    run.finish()
    with store.session() as session:
        ids = session.scalars(
            select(LogLine.id).where(LogLine.job_id == run.refs["build"].id).order_by(LogLine.id)
        ).all()
    last_page = (len(ids) - 1) // PAGE * PAGE
    middle_page = len(ids) // 2 // PAGE * PAGE
    cursors = [0, ids[middle_page - 1], ids[last_page - 1]]
    return run.id, cursors


def _sorted_page(store: Store, run_id: int, after: int) -> int:
    """The statement log_page sent before: the run's jobs by IN, ordered by id."""
    from conveyor.store.models import Job

    with store.session() as session:
        jobs = session.scalars(select(Job.id).where(Job.run_id == run_id)).all()
        rows = session.execute(
            select(LogLine.id, LogLine.job_id, LogLine.seq, LogLine.ts, LogLine.text)
            .where(LogLine.job_id.in_(list(jobs)), LogLine.id > after)
            .order_by(LogLine.id)
            .limit(PAGE)
        ).all()
    return len(rows)


def _median_ms(call: Callable[[], Any], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


async def _median_ms_async(call: Callable[[], Any]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


async def _through_api(store: Store, run_id: int, cursors: list[int]) -> dict[str, Any]:
    app = create_app(store, ServerConfig(runner_slots=0))
    token = create_token(store, "bench", ["read"])
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=120) as client:
            auth = {"Authorization": f"Bearer {token}"}
            plain = auth | {"Accept-Encoding": "identity"}
            gzip = auth | {"Accept-Encoding": "gzip"}

            async def page(after: int) -> None:
                r = await client.get(
                    f"{API}/runs/{run_id}/logs",
                    params={"after": after, "limit": PAGE},
                    headers=plain,
                )
                assert len(r.json()["lines"]) == PAGE, r.text[:200]

            pages = {
                place: await _median_ms_async(lambda after=after: page(after))
                for place, after in zip(("first", "middle", "last"), cursors, strict=True)
            }

            async def read_all(headers: dict[str, str]) -> dict[str, Any]:
                start, cpu = time.perf_counter(), time.process_time()
                after, count, wire, requests = 0, 0, 0, 0
                while True:
                    r = await client.get(
                        f"{API}/runs/{run_id}/logs",
                        params={"after": after, "limit": PAGE},
                        headers=headers,
                    )
                    requests += 1
                    wire += r.num_bytes_downloaded
                    data = r.json()
                    count += len(data["lines"])
                    after = data["next"]
                    if data["ended"]:
                        break
                return {
                    "seconds": round(time.perf_counter() - start, 2),
                    # Server and client together: this process's CPU, what other work on the
                    # machine does not inflate.
                    "cpu_seconds": round(time.process_time() - cpu, 2),
                    "lines": count,
                    "requests": requests,
                    "wire_mb": round(wire / 1e6, 1),
                }

            async def download(headers: dict[str, str]) -> dict[str, Any]:
                start, cpu = time.perf_counter(), time.process_time()
                r = await client.get(f"{API}/runs/{run_id}/logs/raw", headers=headers)
                return {
                    "seconds": round(time.perf_counter() - start, 2),
                    "cpu_seconds": round(time.process_time() - cpu, 2),
                    "mb": round(len(r.content) / 1e6, 1),
                    "wire_mb": round(r.num_bytes_downloaded / 1e6, 1),
                    # Less the line heading each job's attempt.
                    "lines": r.text.count("\n") - r.text.count("==> "),
                }

            return {
                "page_ms": pages,
                "paged": await read_all(plain),
                "paged_gzip": await read_all(gzip),
                "raw": await download(plain),
                "raw_gzip": await download(gzip),
            }
    finally:
        await lifespan.__aexit__(None, None, None)


def measure() -> dict[str, Any]:
    megabytes = int(os.environ.get("LOG_READ_MB", "200"))
    lines = megabytes * 10_000
    with tempfile.TemporaryDirectory(prefix="conveyor-log-read-") as tmp:
        home = Path(tmp) / "home"
        store = open_store(
            Settings(home=home, database_url=f"sqlite:///{Path(tmp) / 'conveyor.db'}")
        )
        try:
            start = time.perf_counter()
            run_id, cursors = _write(store, lines)
            written = round(time.perf_counter() - start, 1)
            before = {
                place: _median_ms(
                    lambda after=after: _sorted_page(store, run_id, after), BEFORE_REPEATS
                )
                for place, after in zip(("first", "middle", "last"), cursors, strict=True)
            }
            api = asyncio.run(_through_api(store, run_id, cursors))
        finally:
            store.close()
    return {
        "megabytes": megabytes,
        "lines": lines,
        "page": PAGE,
        "written_s": written,
        "before_page_ms": before,
        **api,
        "target_s": TARGET_SECONDS,
        "met": api["paged"]["seconds"] <= TARGET_SECONDS
        and api["paged"]["lines"] == lines + TEST_LINES
        and api["raw"]["lines"] == lines + TEST_LINES,
    }


def section(r: dict[str, Any]) -> str:
    p, b = r["page_ms"], r["before_page_ms"]
    rows = "\n".join(
        f"| {name} | **{x['seconds']} s** ({x['cpu_seconds']} s CPU) | {x['lines']:,} | "
        f"{x.get('requests', 1)} | {x['wire_mb']} MB |"
        for name, x in (
            ("page by page, plain", r["paged"]),
            ("page by page, gzip", r["paged_gzip"]),
            ("raw download, plain", r["raw"]),
            ("raw download, gzip", r["raw_gzip"]),
        )
    )
    return f"""## A {r["megabytes"]} MB log read through the API (target ≤ {r["target_s"]:g} s, each page the same cost)

{r["lines"]:,} lines of 100 bytes in one job of two (the other wrote 100 lines), written
through JobRecorder in batches of 10,000 ({r["written_s"]} s) on SQLite, read through the real
app in-process (httpx.ASGITransport). A page is {r["page"]:,} lines; medians of {REPEATS}
({BEFORE_REPEATS} for the statement before, run alone through the store: no HTTP, no JSON).

| page | `GET .../logs`, whole request (keyset on (job_id, id)) | the statement before alone (IN, ORDER BY id) |
|---|---|---|
| first | **{p["first"]} ms** | {b["first"]} ms |
| middle | **{p["middle"]} ms** | {b["middle"]} ms |
| last | **{p["last"]} ms** | {b["last"]} ms |

The whole log:

| read | time (CPU of server and client) | lines | requests | over the wire |
|---|---|---|---|---|
{rows}
"""  # noqa: E501


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
