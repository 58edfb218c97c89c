"""Failed production health check → previous release serving again, on the process target
(design target: ≤ 2 s).

A stdlib HTTP service (it answers its VERSION on every path, and /healthz with 200 or 503) is
released by the real `conveyor run` from a git repository; a DeliveryController runs in this
process, exactly as inside `conveyor server` (its serve() loop, its proxy on this event loop).
Each round releases a healthy version, then one whose /healthz answers 503, for:

- recreate (the default): the failing release really replaced the old one, so the old one must
  be started again. Measured from the deployment's failure (its `deployment.rolling_back` event
  in the store) to the first moment the stable URL answers the old version again, as seen by a
  separate process that GETs the URL every POLL seconds on a fresh connection.
- blue-green: the failing candidate never takes traffic. Measured from the failed check to the
  candidate's process being gone (discarded) and to the deployment's `deployment.failed` event;
  the poller checks that users saw neither the candidate nor an error.

Detection (the candidate accepts connections → the check gives up) is reported on its own: it
is the check's `within` by construction (a 503 never passes; the check waits out its window).

The controller's path is timed span by span (wrappers installed here around the store
transitions, bundle preparation and the target's stop/launch/route; nothing in src/ changes),
so that "where does the time go" has an answer in every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROUNDS = 7
WITHIN = "1s"
INTERVAL = "50ms"
POLL = 0.005
SERVICE = "shop"
# The service's interpreter by its real path. `python3` through PATH would be, on a machine with
# pyenv, a shim (bash → pyenv exec → python3) that adds tens of ms to every start.
START = os.environ.get("BENCH_DELIVERY_START") or f"{os.path.realpath(sys.executable)} app.py"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled", "superseded", "rejected"}

# The service: standard library only; VERSION on every path, /healthz 200 or 503 (HEALTHY).
APP = """\
import http.server, os, pathlib

VERSION = pathlib.Path("VERSION").read_text().strip()
HEALTHY = pathlib.Path("HEALTHY").read_text().strip() == "yes"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if self.path == "/healthz" and not HEALTHY else 200
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

# A separate process (not a thread of the controller's process): GET / on a fresh connection
# every `every` seconds; print "<unix time the answer arrived> <body or ->" on every change.
POLLER = r"""
import socket, sys, time
port, every, lifetime = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
request = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
last, end = None, time.monotonic() + lifetime
while time.monotonic() < end:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        value = body.decode() if head.startswith(b"HTTP/1.0 200") else "-"
    except OSError:
        value = "-"
    if value != last:
        print(f"{time.time():.6f} {value or '-'}", flush=True)
        last = value
    time.sleep(max(0.0, started + every - time.monotonic()))
"""


def health(within: str = WITHIN) -> str:
    return f"health: {{ http: {{ path: /healthz, within: {within}, interval: {INTERVAL} }} }}"


def pipeline(environments: str) -> str:
    body = "".join(f"  {line}\n" for line in environments.strip().splitlines())
    return f"service: {SERVICE}\njobs:\n  test:\n    run: 'true'\nenvironments:\n{body}"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_IDENTITY, "HOME": str(repo.parent)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def conveyor_env(home: Path) -> dict[str, str]:
    skip = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_") and k not in skip}
    return {**env, **GIT_IDENTITY, "CONVEYOR_HOME": str(home)}


def commit_service(repo: Path, version: str, conveyor_yml: str, *, healthy: bool) -> None:
    files = {
        "app.py": APP,
        "VERSION": version,
        "HEALTHY": "yes" if healthy else "no",
        "conveyor.yml": conveyor_yml,
    }
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", version)


def make_release(
    repo: Path, home: Path, version: str, conveyor_yml: str, *, healthy: bool = True
) -> int:
    """Commit the service at ``version`` and run its pipeline: the new release's id."""
    commit_service(repo, version, conveyor_yml, healthy=healthy)
    env = conveyor_env(home)
    argv = [sys.executable, "-m", "conveyor"]
    subprocess.run([*argv, "run"], cwd=repo, env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*argv, "releases", "--json"], cwd=repo, env=env, check=True, capture_output=True
    )
    return int(json.loads(out.stdout)[0]["id"])


# --- the store, read as a reader would -------------------------------------------------------


def stamp(value: str | None) -> float | None:
    """A store timestamp (naive UTC in SQLite) as unix time."""
    if value is None:
        return None
    when = dt.datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


class Records:
    def __init__(self, db: Path) -> None:
        self.db = db

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def deployments(self, **where: Any) -> list[dict[str, Any]]:
        out = []
        for row in self._rows("SELECT * FROM deployments ORDER BY id"):
            dep = dict(row)
            if any(dep[k] != v for k, v in where.items()):
                continue
            for key in ("checks", "log", "instance"):
                dep[key] = json.loads(dep[key]) if dep[key] else None
            out.append(dep)
        return out

    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT id, ts, type, data FROM events WHERE id > ? ORDER BY id", since_id
        )
        return [
            {"id": r["id"], "ts": stamp(r["ts"]), "type": r["type"], **json.loads(r["data"])}
            for r in rows
        ]

    def last_event_id(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(id), 0) AS m FROM events")[0]["m"])

    def env_url(self, environment: str) -> str | None:
        rows = self._rows("SELECT url FROM environments WHERE name = ?", environment)
        return rows[0]["url"] if rows else None


def event_ts(events: list[dict[str, Any]], type_: str, **match: Any) -> float:
    for ev in events:
        if ev["type"] == type_ and all(ev.get(k) == v for k, v in match.items()):
            ts: float = ev["ts"]
            return ts
    raise RuntimeError(f"no {type_} event with {match}")


# --- watching the stable URL -----------------------------------------------------------------


class Poller:
    """The stable URL as a user sees it, from another process; every change with its time."""

    def __init__(self, port: int, out: Path, lifetime: float = 1800.0) -> None:
        self.out = out
        self._fh = out.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", POLLER, str(port), str(POLL), str(lifetime)],
            stdout=self._fh,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def seen(self) -> list[tuple[float, str]]:
        lines = self.out.read_text().splitlines()
        return [(float(t), v) for t, _, v in (line.partition(" ") for line in lines) if v]

    async def until(self, value: str, after: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, v in self.seen():
                if t >= after and v == value:
                    return t
            await asyncio.sleep(0.02)
        raise RuntimeError(f"the stable URL never answered {value!r} after the failure")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def stop_release_processes(home: Path) -> None:
    """Every process the process target started (its cwd is a release folder): stopped by pid."""
    from conveyor.targets import process as process_target

    releases = str(home / "releases")
    for pid, child in list(process_target._CHILDREN.items()):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)
        process_target._CHILDREN.pop(pid, None)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd.startswith(releases):
            try:
                os.killpg(int(entry.name), signal.SIGKILL)
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)


# --- spans of the controller's path ----------------------------------------------------------


class Spans:
    """Wall-clock spans of the functions the controller calls, by wrapping them in place for the
    duration of the benchmark (restored afterwards)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, float]] = []
        self._undo: list[Callable[[], None]] = []

    def _install(self, owner: Any, attr: str, wrapper: Any) -> None:
        if attr in owner.__dict__:
            original = owner.__dict__[attr]
            self._undo.append(lambda: setattr(owner, attr, original))
        else:  # inherited (e.g. from the proxied-target base): dropping the wrapper restores it
            self._undo.append(lambda: delattr(owner, attr))
        setattr(owner, attr, wrapper)

    def sync(self, owner: Any, attr: str, label: Callable[..., str] | None = None) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                name = label(*args, **kwargs) if label else attr
                self.items.append((name, started, time.time()))

        self._install(owner, attr, wrapper)

    def coro(self, owner: Any, attr: str, label: Callable[..., str] | None = None) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return await original(*args, **kwargs)
            finally:
                name = label(*args, **kwargs) if label else attr
                self.items.append((name, started, time.time()))

        self._install(owner, attr, wrapper)

    def between(self, start: float, end: float) -> list[tuple[str, float, float]]:
        return sorted((s for s in self.items if s[1] >= start and s[2] <= end), key=lambda s: s[1])

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def instrumented() -> Iterator[Spans]:
    import httpx

    from conveyor.delivery import controller
    from conveyor.targets.process import ProcessTarget

    spans = Spans()
    # The store transitions, wherever the controller finds them (engine.promotion, or the
    # module it calls them from); one that is not there is simply not timed.
    modules = [getattr(controller, m) for m in ("outcomes", "promotion") if hasattr(controller, m)]
    for name in ("fail", "record_log", "record_checks", "record_placed", "succeed"):
        owner = next((m for m in modules if name in vars(m)), None)
        if owner is not None:
            spans.sync(owner, name, label=lambda *a, _n=name, **k: f"store: {_n}")
    spans.sync(controller, "prepare_bundle", label=lambda *a, **k: "prepare_bundle")
    spans.sync(controller.DeliveryController, "_load", label=lambda *a, **k: "store: _load")
    spans.coro(controller, "run_health", label=lambda *a, **k: "health checks")
    spans.coro(
        ProcessTarget,
        "_stop",
        label=lambda self, inst, *a, **k: f"stop {inst.state.get('version')}",
    )
    spans.coro(
        ProcessTarget,
        "_launch",
        label=lambda self, bundle, *a, **k: f"launch {bundle.version} (spawn → port accepts)",
    )
    spans.coro(
        ProcessTarget,
        "_route",
        label=lambda self, inst, *a, **k: f"route proxy → {inst.state.get('version')}",
    )
    # Synchronous work on the event loop, which also carries every environment's proxy.
    spans.sync(httpx.AsyncClient, "__init__", label=lambda *a, **k: "httpx.AsyncClient() made")
    try:
        yield spans
    finally:
        spans.restore()


# --- the scenario ----------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": _ms(statistics.median(values)),
        "min_ms": _ms(min(values)),
        "max_ms": _ms(max(values)),
    }


async def _scenario(root: Path, strategy: str, rounds: int) -> dict[str, Any]:
    from conveyor.delivery.controller import DeliveryController
    from conveyor.runner.artifacts import ArtifactStore
    from conveyor.store.db import Settings, open_store

    repo, home = root / "repo", root / "home"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    deploy = f"{{ target: process, start: '{START}'" + (
        ", strategy: blue-green }" if strategy == "blue-green" else " }"
    )
    conveyor_yml = pipeline(f"production:\n  deploy: {deploy}\n  {health()}")

    first = await asyncio.to_thread(make_release, repo, home, "g0", conveyor_yml)
    store = open_store(Settings.resolve(home))
    records = Records(home / "conveyor.db")
    # The server's default poll; it is woken at once whenever a release is made, as the server
    # is by its own runs (the hub's release.created).
    controller = DeliveryController(store, ArtifactStore(home / "artifacts"))
    loop_task = asyncio.create_task(controller.serve())
    poller: Poller | None = None

    async def settled(release_id: int, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            deps = records.deployments(release_id=release_id)
            if deps and all(d["status"] in TERMINAL for d in deps):
                return deps[-1]
            await asyncio.sleep(0.02)
        raise RuntimeError(f"release {release_id} did not settle in {timeout:g} s")

    async def release(version: str, *, healthy: bool) -> int:
        rid = await asyncio.to_thread(
            make_release, repo, home, version, conveyor_yml, healthy=healthy
        )
        controller.wake.set()
        return rid

    per_round: list[dict[str, Any]] = []
    try:
        with instrumented() as spans:
            controller.wake.set()
            if (await settled(first))["status"] != "succeeded":
                raise RuntimeError("the first release did not deploy")
            url = records.env_url("production")
            assert url is not None
            poller = Poller(int(url.rsplit(":", 1)[1]), root / "poller.log")
            await poller.until("g0", after=0)
            for n in range(1, rounds + 1):
                good, bad = f"g{n}", f"b{n}"
                good_id = await release(good, healthy=True)
                if (await settled(good_id))["status"] != "succeeded":
                    raise RuntimeError(f"{good} did not deploy")
                await poller.until(good, after=0)
                since = records.last_event_id()
                bad_id = await release(bad, healthy=False)
                dep = await settled(bad_id)
                events = records.events(since)
                per_round.append(
                    await _measure_round(strategy, dep, events, records, poller, spans, good, bad)
                )
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        if poller is not None:
            poller.stop()
        store.close()
        stop_release_processes(home)
    return _report(strategy, per_round)


async def _measure_round(
    strategy: str,
    dep: dict[str, Any],
    events: list[dict[str, Any]],
    records: Records,
    poller: Poller,
    spans: Spans,
    good: str,
    bad: str,
) -> dict[str, Any]:
    bad_id = dep["id"]
    # Spans name releases by version (r<id>-<sha>); say which is which.
    roles = {
        f"r{dep['release_id']}-": "the failed release",
        f"r{dep['previous_release_id']}-": "the old release",
    }

    def role(name: str) -> str:
        for prefix, who in roles.items():
            at = name.find(prefix)
            if at >= 0:
                end = name.find(" ", at)
                return name[:at] + who + ("" if end < 0 else name[end:])
        return name

    checking = event_ts(events, "deployment.checking", deployment=bad_id)
    deploying = event_ts(events, "deployment.deploying", deployment=bad_id)
    [verdict] = [s[2] for s in spans.between(checking, time.time()) if s[0] == "health checks"][:1]
    row: dict[str, Any] = {
        "deploying_to_accepting": checking - deploying,
        "detection": verdict - checking,
    }
    if strategy == "recreate":
        if dep["status"] != "rolled_back":
            raise RuntimeError(f"{bad} ended {dep['status']}, not rolled back: {dep['reason']}")
        failed = event_ts(events, "deployment.rolling_back", deployment=bad_id)
        [rollback] = [d for d in records.deployments(rollback_of=bad_id)]
        restored = event_ts(events, "deployment.succeeded", deployment=rollback["id"])
        serving = await poller.until(good, after=failed)
        seen = poller.seen()
        # The poller writes changes only: the bad release answered from its entry to the next.
        at = next(i for i, (t, v) in enumerate(seen) if v == bad and t > deploying)
        first_bad, bad_gone = seen[at][0], seen[at + 1][0]
        row.update(
            failure_to_serving=serving - failed,
            verdict_to_failure=failed - verdict,
            verdict_to_serving=serving - verdict,
            failure_to_rollback_succeeded=restored - failed,
            outage=serving - bad_gone,
            bad_release_visible=bad_gone - first_bad,
            path=[(role(n), s - verdict, e - s) for n, s, e in spans.between(verdict, restored)],
        )
    else:
        if dep["status"] != "failed":
            raise RuntimeError(f"{bad} ended {dep['status']}: {dep['reason']}")
        failed = event_ts(events, "deployment.failed", deployment=bad_id)
        stopped = [
            e
            for name, s, e in spans.between(verdict, failed)
            if role(name) == "stop the failed release"
        ]
        seen = [(t, v) for t, v in poller.seen() if deploying <= t <= failed + 0.1]
        row.update(
            verdict_to_discarded=stopped[0] - verdict,
            verdict_to_failure=failed - verdict,
            users_saw=sorted({v for _, v in seen} - {good}),
            path=[(role(n), s - verdict, e - s) for n, s, e in spans.between(verdict, failed)],
        )
    return row


def _report(strategy: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rounds[0].items() if isinstance(v, float)]
    out: dict[str, Any] = {
        "strategy": strategy,
        "rounds": len(rounds),
        **{k: _summary([r[k] for r in rounds]) for k in keys},
    }
    # The controller's path after the verdict: each span's median start and duration.
    names: dict[str, list[tuple[float, float]]] = {}
    for r in rounds:
        counted: dict[str, int] = {}
        for name, start, length in r["path"]:
            counted[name] = counted.get(name, 0) + 1
            key = name if counted[name] == 1 else f"{name} (#{counted[name]})"
            names.setdefault(key, []).append((start, length))
    out["path_after_verdict"] = [
        {
            "span": name,
            "starts_at_ms": _ms(statistics.median(s for s, _ in values)),
            "takes_ms": _ms(statistics.median(d for _, d in values)),
        }
        for name, values in sorted(
            names.items(), key=lambda kv: statistics.median(s for s, _ in kv[1])
        )
        if len(values) == len(rounds)
    ]
    if strategy == "blue-green":
        out["users_saw_other_than_old"] = sorted({v for r in rounds for v in r["users_saw"]})
    return out


def service_start(repeats: int = 7) -> float:
    """Seconds from spawning the service (as the target does: `bash -c START`) to its port
    accepting a connection, polled every millisecond, without Conveyor: the floor of a launch."""
    times = []
    with tempfile.TemporaryDirectory(prefix="conveyor-start-") as tmp:
        root = Path(tmp)
        for name, text in {"app.py": APP, "VERSION": "x", "HEALTHY": "yes"}.items():
            (root / name).write_text(text)
        for _ in range(repeats):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            started = time.monotonic()
            child = subprocess.Popen(
                ["bash", "-c", START],
                cwd=root,
                env={**os.environ, "PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                while time.monotonic() - started < 10:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.001)
                times.append(time.monotonic() - started)
            finally:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    return statistics.median(times)


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    results: dict[str, Any] = {
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "within": WITHIN,
        "interval": INTERVAL,
        "poll_ms": POLL * 1000,
        "start": START,
        "service_alone_start_ms": _ms(service_start()),
    }
    for strategy in ("recreate", "blue-green"):
        with tempfile.TemporaryDirectory(prefix="conveyor-rollback-") as tmp:
            results[strategy] = asyncio.run(_scenario(Path(tmp), strategy, rounds))
    return results


def table(r: dict[str, Any]) -> str:
    rc, bg = r["recreate"], r["blue-green"]

    def cell(d: dict[str, float]) -> str:
        return f"{d['median_ms']} / {d['max_ms']} ms"

    lines = [
        "| figure (median / max) | value |",
        "|---|---|",
        f"| recreate: failure (`deployment.rolling_back`) → stable URL answers the old release "
        f"| **{cell(rc['failure_to_serving'])}** |",
        f"| recreate: check verdict → stable URL answers the old release "
        f"| {cell(rc['verdict_to_serving'])} |",
        f"| recreate: failure → rollback deployment succeeded (re-checked) "
        f"| {cell(rc['failure_to_rollback_succeeded'])} |",
        f"| recreate: stable URL answered nothing (bad release stopped → old one answers) "
        f"| {cell(rc['outage'])} |",
        f"| recreate: users saw the bad release (first → last answer) "
        f"| {cell(rc['bad_release_visible'])} |",
        f"| detection: bad release accepts connections → check fails (within {r['within']}) "
        f"| {cell(rc['detection'])} |",
        f"| blue-green: check verdict → candidate discarded (process gone) "
        f"| **{cell(bg['verdict_to_discarded'])}** |",
        f"| blue-green: check verdict → `deployment.failed` | {cell(bg['verdict_to_failure'])} |",
        "| blue-green: users saw anything but the old release "
        f"| {', '.join(bg['users_saw_other_than_old']) or 'nothing (0 ms)'} |",
    ]
    return "\n".join(lines)


def path_table(r: dict[str, Any]) -> str:
    """The recreate rollback's path, span by span, with the moment users get the old release."""
    rc = r["recreate"]
    steps = [
        (s["starts_at_ms"], s["span"], f"{s['takes_ms']} ms") for s in rc["path_after_verdict"]
    ]
    steps.append(
        (rc["verdict_to_serving"]["median_ms"], "**the stable URL answers the old release**", "")
    )
    lines = ["| after the check's verdict (recreate) | starts at | takes |", "|---|---|---|"]
    for start, name, takes in sorted(steps, key=lambda s: s[0]):
        lines.append(f"| {name} | {start} ms | {takes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
    print(json.dumps(result, indent=2))
    print(table(result))
    print(path_table(result))
