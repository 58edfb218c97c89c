"""The remote runner agent: a process on any machine that long-polls a Conveyor server for jobs
its labels allow, executes them with the same JobExecutor as the built-in runner, and reports
over HTTP (see conveyor.server.runners for the protocol).

Delivery: every report of a job gets the next sequence number and reports are sent in that
order. A batch that gets no answer (network error, 5xx, the server restarting) is sent again,
unchanged, with backoff, for at most `give_up` seconds; the server skips sequence numbers it has
already applied, so nothing is lost, reordered or applied twice. Each report call waits until
its report was delivered, so a runner that cannot reach the server does not start the job's
next step. A 409 means the lease was taken away (the job was given to another runner, or went
back to the queue): the reporter raises StaleLease and the executor stops the job quietly; any
other 4xx abandons the job the same way, with a log line, and is never retried. After
`give_up` seconds without the server the agent abandons the job the same way; by then its
lease has expired and the server gives it to another runner.

The lease is kept alive by its own request (`POST /jobs/{id}/heartbeat`, every second), never
queued behind the job's reports: a step printing hundreds of megabytes keeps its lease however
long the log takes to deliver. Report requests are capped by bytes as well as by lines, so no
one request holds the server's write lock for long.

Stopping (SIGTERM or SIGINT): the agent takes no new jobs and lets the running ones finish,
then exits. A second signal stops them now: their processes are ended and the jobs abandoned
without a final report, so the server gives them to another runner once their leases expire
(as if this runner had died, counted against the requeue limit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import io
import logging
import os
import random
import shutil
import signal
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from conveyor import __version__
from conveyor.errors import ConveyorError, StaleLease
from conveyor.plan import JobPlan, RunContext
from conveyor.reports import ArtifactFile, LogBatch, StepOutcome
from conveyor.runner.artifacts import ArtifactStore
from conveyor.runner.executor import JobExecutor, RunnerSettings
from conveyor.sandbox import Sandbox, default_sandbox
from conveyor.secrets import Secrets
from conveyor.settings import Settings
from conveyor.states import JobStatus

log = logging.getLogger("conveyor.runner.agent")

LEASE_WAIT_SECONDS = 25.0
# Backoff between tries (first, longest), with jitter so a fleet does not retry in step.
LEASE_RETRY = (0.2, 5.0)
REPORT_RETRY = (0.1, 2.0)
# How long a job's reports are retried before the job is abandoned (its lease is long gone).
GIVE_UP_SECONDS = 300.0
REQUEST_TIMEOUT_SECONDS = 30.0
REPORTS_PER_REQUEST = 500  # the server takes up to 1000
LINES_PER_REPORT = 2000
LINES_PER_REQUEST = 10_000
# Bytes of log text per report and per request: long lines must not make one huge request.
BYTES_PER_REPORT = 256 * 1024
BYTES_PER_REQUEST = 1024 * 1024
# A heartbeat that gets no answer within this is let go: the next one follows a second later,
# and a lease outlives many lost heartbeats.
HEARTBEAT_TIMEOUT_SECONDS = 10.0
# Commit trees kept for later jobs of the same commit.
KEEP_SOURCES = 8
_CHUNK = 2**20


class JobAbandoned(StaleLease):
    """This runner stopped reporting on a job: the server was unreachable for too long, refused
    the reports, or the runner was stopped. The server gives the job to another runner."""


class Echo(Protocol):
    def __call__(self, line: str, err: bool = False) -> None: ...


def _log_echo(line: str, err: bool = False) -> None:
    log.log(logging.WARNING if err else logging.INFO, "%s", line)


class Backoff:
    def __init__(self, first: float, longest: float) -> None:
        self.first = first
        self.longest = longest
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.longest, self._next * 2)
        return delay * random.uniform(0.75, 1.0)  # noqa: S311 (jitter, not a secret)

    def reset(self) -> None:
        self._next = self.first


class Unreachable(Exception):
    """The server gave no usable answer (for the whole retry window, where there is one)."""


def _transient(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _problem(exc: httpx.RequestError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def message_of(response: httpx.Response) -> str:
    """The server's error message, or the status."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"the server answered {response.status_code}"


async def send_retrying(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    give_up: float,
    retry: tuple[float, float] = REPORT_RETRY,
    check: Callable[[], None] | None = None,
    content: Callable[[], AsyncIterator[bytes]] | None = None,
    on_failure: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request until the server answers something other than 5xx/408/429. Network errors
    and those answers are retried with backoff for `give_up` seconds, then Unreachable.
    `check` is called before every try (it may raise to stop trying); `content` makes a fresh
    body for each try; `on_failure` hears of the first failure."""
    backoff = Backoff(*retry)
    first_failure: float | None = None
    while True:
        if check is not None:
            check()
        try:
            if content is not None:
                kwargs["content"] = content()
            response = await client.request(method, url, **kwargs)
            if not _transient(response.status_code):
                return response
            problem = message_of(response)
        except httpx.RequestError as exc:
            problem = _problem(exc)
        now = time.monotonic()
        if first_failure is None:
            first_failure = now
            log.info("%s %s failed (%s); trying again", method, url, problem)
            if on_failure is not None:
                on_failure(problem)
        if now - first_failure >= give_up:
            raise Unreachable(f"no answer for {give_up:g}s (last: {problem})")
        await asyncio.sleep(backoff.next())


def _log_bytes(report: Mapping[str, Any]) -> int:
    """About how many bytes a report's log lines take in a request (text plus timestamp)."""
    return sum(len(text) + 40 for _, text in report.get("lines", ()))


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk


# eq=False: a reporter is one job's live state, the same only as itself.
@dataclass(eq=False)
class HttpReporter:
    """A JobReporter that sends a job's reports to the server, in order, without loss."""

    client: httpx.AsyncClient
    job_id: int
    token: int
    artifact_store: ArtifactStore
    _: KW_ONLY
    give_up: float = GIVE_UP_SECONDS
    retry: tuple[float, float] = REPORT_RETRY
    # Hears when the server stops and starts answering again.
    notice: Callable[[str], None] | None = None
    cancel_requested: bool = field(default=False, init=False)
    failure: StaleLease | None = field(default=None, init=False)
    _troubled: bool = field(default=False, init=False)
    _pending: list[dict[str, Any]] = field(default_factory=list, init=False)
    _seq: int = field(default=0, init=False)
    _delivered: int = field(default=0, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    @property
    def seq(self) -> int:
        """The sequence number of the last report made."""
        return self._seq

    @property
    def delivered(self) -> int:
        """The sequence number of the last report the server acknowledged."""
        return self._delivered

    def abandon(self, reason: str) -> None:
        """Report nothing more on this job: every later report raises JobAbandoned."""
        if self.failure is None:
            self.failure = JobAbandoned(reason)

    def check(self) -> None:
        """Raise if this job's reporting has ended (lease lost, or abandoned)."""
        if self.failure is not None:
            raise type(self.failure)(self.failure.message)

    def _add(self, kind: str, **fields: Any) -> int:
        self.check()
        self._seq += 1
        self._pending.append({"seq": self._seq, "kind": kind, **fields})
        return self._seq

    async def _deliver(self, upto: int) -> None:
        """Return once report `upto` (and every one before it) has been acknowledged."""
        async with self._lock:
            while self._delivered < upto:
                self.check()
                batch = self._next_batch()
                answer = await self._send(batch)
                del self._pending[: len(batch)]
                self._delivered = batch[-1]["seq"]
                if answer.get("cancel"):
                    self.cancel_requested = True

    def _next_batch(self) -> list[dict[str, Any]]:
        """The oldest pending reports, as many as one request should carry (at least one)."""
        lines = size = 0
        for count, report in enumerate(self._pending[:REPORTS_PER_REQUEST]):
            lines += len(report.get("lines", ()))
            size += _log_bytes(report)
            if count and (lines > LINES_PER_REQUEST or size > BYTES_PER_REQUEST):
                return self._pending[:count]
        return self._pending[:REPORTS_PER_REQUEST]

    def _trouble(self, problem: str) -> None:
        if self.notice is not None and not self._troubled:
            self.notice(
                f"the server does not answer ({problem}); keeping {len(self._pending)} "
                "report(s) and trying again"
            )
        self._troubled = True

    def _stop_unless_accepted(self, response: httpx.Response, what: str) -> None:
        """Raise (through ``check``) unless the server took the request: a 409 means the lease
        was taken away, any other 4xx is an answer, not an outage (the same request would be
        refused again), so the job is abandoned rather than retried."""
        if response.status_code == 200:
            return
        if response.status_code == 409:
            log.warning(
                "job %s: the server says this runner no longer holds it (%s); abandoning it",
                self.job_id,
                message_of(response),
            )
            self.failure = StaleLease(f"the lease was taken away: {message_of(response)}")
        else:
            log.warning(
                "job %s: the server refused its %s (%s); abandoning it",
                self.job_id,
                what,
                message_of(response),
            )
            self.abandon(f"the server refused the {what}: {message_of(response)}")
        self.check()

    async def _send(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            response = await send_retrying(
                self.client,
                "POST",
                f"jobs/{self.job_id}/reports",
                json={"token": self.token, "reports": batch},
                give_up=self.give_up,
                retry=self.retry,
                check=self.check,
                on_failure=self._trouble,
            )
        except Unreachable as exc:
            self.abandon(f"gave up reporting to the server: {exc}")
            raise JobAbandoned(f"gave up reporting to the server: {exc}") from None
        self._stop_unless_accepted(response, "reports")
        if self._troubled:
            self._troubled = False
            if self.notice is not None:
                self.notice(f"the server answers again; reports up to #{batch[-1]['seq']} sent")
        answer: dict[str, Any] = response.json()
        return answer

    # --- JobReporter ---------------------------------------------------------------------------

    async def step_started(self, position: int, attempt: int) -> None:
        await self._deliver(self._add("step_started", position=position, attempt=attempt))

    async def log(self, position: int | None, lines: LogBatch) -> None:
        if not lines:
            return
        last = 0
        chunk: list[list[str]] = []
        size = 0
        for ts, text in lines:
            chunk.append([ts.isoformat(), text])
            size += len(text) + 40
            if len(chunk) >= LINES_PER_REPORT or size >= BYTES_PER_REPORT:
                last = self._add("log", position=position, lines=chunk)
                chunk, size = [], 0
        if chunk:
            last = self._add("log", position=position, lines=chunk)
        await self._deliver(last)

    async def step_finished(self, position: int, outcome: StepOutcome) -> None:
        seq = self._add(
            "step_finished",
            position=position,
            status=outcome.status.value,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            attempts=outcome.attempts,
        )
        await self._deliver(seq)

    async def artifacts(self, files: Sequence[ArtifactFile]) -> None:
        """Upload each file's bytes, then record the files on the job."""
        self.check()
        for f in files:
            await self._upload(f)
        listed = [{"path": f.path, "digest": f.digest, "size": f.size} for f in files]
        await self._deliver(self._add("artifacts", files=listed))

    async def _upload(self, f: ArtifactFile) -> None:
        path = self.artifact_store.path_for(f.digest)
        try:
            response = await send_retrying(
                self.client,
                "PUT",
                f"artifacts/{f.digest}",
                give_up=self.give_up,
                retry=self.retry,
                check=self.check,
                content=lambda: _file_chunks(path),
                on_failure=self._trouble,
                headers={"Content-Type": "application/octet-stream"},
            )
        except Unreachable as exc:
            self.abandon(f"gave up uploading artifact {f.path}: {exc}")
            raise JobAbandoned(f"gave up uploading artifact {f.path}: {exc}") from None
        if response.status_code not in (200, 201):
            raise ConveyorError(
                f"the server refused artifact {f.path} ({f.digest}): {message_of(response)}"
            )

    async def job_finished(self, status: JobStatus, reason: str | None) -> None:
        await self._deliver(self._add("job_finished", status=status.value, reason=reason))

    async def heartbeat(self) -> bool:
        """Extend the lease with a request of its own, beside (not behind) pending reports."""
        self.check()
        try:
            response = await self.client.post(
                f"jobs/{self.job_id}/heartbeat",
                json={"token": self.token},
                timeout=HEARTBEAT_TIMEOUT_SECONDS,
            )
        except httpx.RequestError as exc:
            log.info("job %s: a heartbeat got no answer (%s)", self.job_id, _problem(exc))
            return self.cancel_requested
        if _transient(response.status_code):
            log.info("job %s: a heartbeat failed (%s)", self.job_id, message_of(response))
            return self.cancel_requested
        self._stop_unless_accepted(response, "heartbeat")
        if response.json().get("cancel"):
            self.cancel_requested = True
        return self.cancel_requested


def _untar(data: bytes, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            # "data": nothing outside the tree, no devices, no set-uid bits.
            tar.extractall(tmp, filter="data")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# eq=False: one agent's cache of trees, the same only as itself.
@dataclass(eq=False)
class ServerSources:
    """Commit trees from the server (GET /runs/{id}/source), downloaded once per commit and
    copied into each job's workspace, so jobs never see each other's changes."""

    client: httpx.AsyncClient
    root: Path
    _: KW_ONLY
    give_up: float = GIVE_UP_SECONDS
    keep: int = KEEP_SOURCES
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict, init=False)
    _trees: collections.OrderedDict[tuple[str, str], Path] = field(
        default_factory=collections.OrderedDict, init=False
    )
    _copying: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter, init=False
    )

    def for_run(self, run_id: int, reporter: HttpReporter | None = None) -> RunSources:
        return RunSources(self, run_id, reporter)

    async def checkout(
        self, run_id: int, repo: Path, sha: str, dest: Path, reporter: HttpReporter | None = None
    ) -> None:
        key = (str(repo), sha)
        async with self._locks.setdefault(key, asyncio.Lock()):
            tree = self._trees.get(key)
            if tree is None or not tree.is_dir():
                tree = await self._download(run_id, sha, reporter)
                self._trees[key] = tree
            self._trees.move_to_end(key)
            self._copying[key] += 1
        try:
            await asyncio.to_thread(shutil.copytree, tree, dest, symlinks=True)
        finally:
            self._copying[key] -= 1
            self._evict()

    async def _download(self, run_id: int, sha: str, reporter: HttpReporter | None) -> Path:
        try:
            response = await send_retrying(
                self.client,
                "GET",
                f"runs/{run_id}/source",
                give_up=self.give_up,
                check=None if reporter is None else reporter.check,
            )
        except Unreachable as exc:
            reason = f"gave up downloading the source of run {run_id}: {exc}"
            if reporter is not None:
                reporter.abandon(reason)
            raise JobAbandoned(reason) from None
        if response.status_code != 200:
            raise ConveyorError(
                f"cannot get the source of run {run_id} from the server: {message_of(response)}"
            )
        tree = self.root / f"{sha}-{uuid.uuid4().hex[:8]}"
        try:
            await asyncio.to_thread(_untar, response.content, tree)
        except (tarfile.TarError, OSError) as exc:
            raise ConveyorError(f"cannot unpack the source of run {run_id}: {exc}") from None
        return tree

    def _evict(self) -> None:
        for key in list(self._trees):
            if len(self._trees) <= self.keep:
                return
            lock = self._locks.get(key)
            if self._copying[key] or (lock is not None and lock.locked()):
                continue
            tree = self._trees.pop(key)
            self._locks.pop(key, None)
            del self._copying[key]
            shutil.rmtree(tree, ignore_errors=True)


@dataclass(frozen=True)
class RunSources:
    """The executor's `sources` for one job: checkout(repo, sha, dest) from the server."""

    downloads: ServerSources
    run_id: int
    reporter: HttpReporter | None = None

    async def checkout(self, repo: Path, sha: str, dest: Path) -> None:
        await self.downloads.checkout(self.run_id, repo, sha, dest, self.reporter)


def legacy_secrets_file(work_dir: Path, configured: Path | None = None) -> Path | None:
    """The secrets file agents of earlier versions read: no longer read (the server sends each
    job's secrets with its lease), so the agent names it at start. ``configured``:
    CONVEYOR_SECRETS_FILE."""
    path = configured or work_dir / "secrets.env"
    return path if path.is_file() else None


@dataclass
class RunningJob:
    label: str
    reporter: HttpReporter
    cancel: asyncio.Event


class Agent:
    """Leases jobs from a server and runs up to `slots` of them at once."""

    def __init__(
        self,
        server_url: str,
        token: str,
        name: str,
        labels: Sequence[str],
        slots: int,
        work_dir: Path,
        *,
        echo: Echo = _log_echo,
        base_env: Mapping[str, str] | None = None,
        lease_wait: float = LEASE_WAIT_SECONDS,
        give_up: float = GIVE_UP_SECONDS,
        sandbox: Sandbox | None = None,
        settings: Settings | None = None,
    ) -> None:
        if not server_url.startswith(("http://", "https://")):
            raise ConveyorError(
                f"the server URL must start with http:// or https://, not {server_url!r}"
            )
        self.server_url = server_url.rstrip("/")
        self.token = token
        self.name = name
        self.labels = list(dict.fromkeys(labels))
        self.slots = max(1, slots)
        self.work_dir = work_dir.absolute()
        self.echo = echo
        self.base_env = base_env
        # Where jobs run (conveyor.sandbox); None: configured from the environment at serve().
        self.sandbox = sandbox
        # CONVEYOR_* as `conveyor runner` read them at start (none given: the defaults).
        self.settings = Settings() if settings is None else settings
        self.lease_wait = lease_wait
        self.give_up = give_up
        self.jobs: dict[asyncio.Task[None], RunningJob] = {}
        self._stopping: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._signals = 0

    # --- stopping ----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Take no new jobs; with `now`, also end the running ones (they are abandoned, and the
        server gives them to another runner when their leases expire)."""
        if self._stopping is not None:
            self._stopping.set()
        if now:
            for job in self.jobs.values():
                job.reporter.abandon("the runner was stopped while the job ran")
                job.cancel.set()
        if self._changed is not None:
            self._changed.set()

    def _signalled(self, signame: str) -> None:
        self._signals += 1
        if self._signals == 1:
            running = len(self.jobs)
            if running:
                self.echo(
                    f"{signame}: stopping; waiting for {running} running job(s) to finish "
                    "(send the signal again to stop them now)",
                    err=True,
                )
            else:
                self.echo(f"{signame}: stopping", err=True)
            self.stop()
        else:
            self.echo(
                f"{signame}: stopping now; the running jobs are ended and go back to the server",
                err=True,
            )
            self.stop(now=True)

    # --- serving -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One agent per work dir: it deletes what it finds there from an earlier life."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.work_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConveyorError(
                    f"another runner agent is using the work directory {self.work_dir}",
                    hint="give each agent its own --work-dir",
                ) from None
            for leftover in ("jobs", "sources"):
                shutil.rmtree(self.work_dir / leftover, ignore_errors=True)
            yield
        finally:
            os.close(fd)

    async def serve(self, *, handle_signals: bool = False) -> None:
        """Lease and run jobs until stop() (or SIGTERM/SIGINT with `handle_signals`)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        if self.sandbox is None:
            self.sandbox = await asyncio.to_thread(default_sandbox, self.settings)
        if self.sandbox.enabled:
            self.echo(f"sandbox: {self.sandbox.describe()}", err=True)
        else:
            self.echo(f"warning: sandbox {self.sandbox.describe()}", err=True)
        with self._exclusive():
            legacy = legacy_secrets_file(self.work_dir, self.settings.secrets_file)
            if legacy is not None:
                self.echo(
                    f"warning: {legacy} is no longer read: the server sends each job the "
                    "secrets of its service; import them there with `conveyor secret import "
                    f"SERVICE {legacy}`",
                    err=True,
                )
            signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
            for sig in signals:
                loop.add_signal_handler(sig, self._signalled, sig.name)
            try:
                async with httpx.AsyncClient(
                    base_url=f"{self.server_url}/api/v1/",
                    headers={
                        "Authorization": f"Bearer {self.token}",
                        "User-Agent": f"conveyor-runner/{__version__}",
                    },
                    timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
                ) as client:
                    sources = ServerSources(client, self.work_dir / "sources", give_up=self.give_up)
                    try:
                        await self._lease_loop(client, sources)
                    finally:
                        self._stopping.set()
                        if self.jobs:
                            await asyncio.gather(*self.jobs, return_exceptions=True)
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)

    async def _lease_loop(self, client: httpx.AsyncClient, sources: ServerSources) -> None:
        assert self._stopping is not None
        assert self._changed is not None
        backoff = Backoff(*LEASE_RETRY)
        down = False
        while not self._stopping.is_set():
            if len(self.jobs) >= self.slots:
                self._changed.clear()
                await self._changed.wait()
                continue
            poll = asyncio.create_task(self._lease_once(client))
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not poll.done():
                # Stopping mid-poll: the server sees the disconnect and leases nothing more.
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await poll
                return
            try:
                lease = poll.result()
            except Unreachable as exc:
                if not down:
                    self.echo(
                        f"cannot reach the server at {self.server_url} ({exc}); trying again",
                        err=True,
                    )
                    down = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.next()):
                        await self._stopping.wait()
                continue
            if down:
                self.echo(f"the server at {self.server_url} answers again", err=True)
                down = False
            backoff.reset()
            if lease is not None:
                self._start(client, sources, lease)

    async def _lease_once(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        """One long-poll: a lease, or None. Unreachable for anything worth trying again;
        ConveyorError when the server refuses this runner (bad token, bad name or labels)."""
        try:
            response = await client.post(
                "runners/lease",
                json={"name": self.name, "labels": self.labels, "wait": self.lease_wait},
                timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=self.lease_wait + 15),
            )
        except httpx.RequestError as exc:
            raise Unreachable(_problem(exc)) from None
        if response.status_code == 204:
            return None
        if response.status_code in (401, 403, 422):
            raise ConveyorError(
                f"the server at {self.server_url} refused this runner: {message_of(response)}",
                hint="the token needs the runner scope: "
                "`conveyor token create NAME --scope runner`",
            )
        if response.status_code != 200:
            raise Unreachable(message_of(response))
        try:
            lease: dict[str, Any] = response.json()
            for key in ("job_id", "token", "run_id"):
                int(lease[key])
        except (ValueError, KeyError, TypeError):
            raise Unreachable("the server's answer is not a lease") from None
        return lease

    def _start(
        self, client: httpx.AsyncClient, sources: ServerSources, lease: dict[str, Any]
    ) -> None:
        job_id, token, run_id = int(lease["job_id"]), int(lease["token"]), int(lease["run_id"])
        label = f"job {job_id} ({lease.get('job')}) of run {run_id}"
        root = self.work_dir / "jobs" / f"{job_id}-{token}"
        artifacts = ArtifactStore(root / "artifacts")
        reporter = HttpReporter(
            client,
            job_id,
            token,
            artifacts,
            give_up=self.give_up,
            notice=lambda message: self.echo(f"{label}: {message}", err=True),
        )
        running = RunningJob(label, reporter, asyncio.Event())
        task = asyncio.create_task(self._run(lease, running, sources, root))
        self.jobs[task] = running
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.jobs.pop(task, None)
        if self._changed is not None:
            self._changed.set()

    async def _run(
        self, lease: dict[str, Any], job: RunningJob, sources: ServerSources, root: Path
    ) -> None:
        reporter = job.reporter
        started = time.monotonic()
        try:
            try:
                plan = JobPlan.model_validate(lease["plan"])
                context = RunContext.model_validate(lease["context"])
            except (ValidationError, KeyError) as exc:
                self.echo(f"{job.label} leased, but its plan is unreadable: {exc}")
                with contextlib.suppress(StaleLease):
                    await reporter.job_finished(
                        JobStatus.FAILED, f"runner {self.name} cannot read the job's plan"
                    )
                return
            self.echo(f"{job.label} leased: {context.service} at {context.sha[:12]}")
            settings = RunnerSettings(
                workspaces=root / "workspaces",
                artifacts=reporter.artifact_store,
                # Resolved by the server for this job's service, sent with the lease.
                secrets=Secrets.from_lease(lease),
                sources=sources.for_run(context.run_id, reporter),
                base_env=self.base_env,
                sandbox=self.sandbox,
                conveyor=self.settings,
            )
            status = await JobExecutor(
                plan, context, reporter, settings, job.cancel, attempt=reporter.token
            ).execute()
        except Exception as exc:  # a fault of this runner: leave the job to its lease
            reporter.abandon(f"the runner failed: {exc!r}")
            log.exception("%s failed in the runner", job.label)
            self.echo(f"{job.label} abandoned: the runner failed: {exc!r}")
            return
        finally:
            await asyncio.to_thread(shutil.rmtree, root, True)
        took = time.monotonic() - started
        if reporter.failure is not None:
            self.echo(f"{job.label} stopped after {took:.1f}s: {reporter.failure.message}")
        else:
            self.echo(f"{job.label} finished: {status.value} in {took:.1f}s")
