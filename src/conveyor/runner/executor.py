"""Execute one job: a fresh workspace at the exact commit, its steps in order, its artifacts.

The executor decides nothing about the run; it reports what happened through a JobReporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from conveyor.errors import ConveyorError, StaleLease
from conveyor.git import export_commit
from conveyor.plan import JobPlan, RunContext, StepPlan
from conveyor.proc import ProcessResult, run_process
from conveyor.reports import JobReporter, StepOutcome
from conveyor.runner.artifacts import ArtifactStore, collect_artifacts
from conveyor.runner.container import (
    client_env,
    client_host_env,
    container_argv,
    container_engine,
    container_name,
    remove_container,
    step_variables,
)
from conveyor.runner.masking import SecretMasker
from conveyor.sandbox import Sandbox, default_sandbox, format_bytes
from conveyor.secrets import Secrets
from conveyor.settings import Settings
from conveyor.states import JobStatus, StepStatus

LOG_FLUSH_SECONDS = 0.1
LOG_FLUSH_LINES = 1000
KILL_GRACE_SECONDS = 5.0
# Well inside the 30 s lease, and often enough that a cancel from elsewhere lands in a second.
HEARTBEAT_SECONDS = 1.0


class SourceCache:
    """One export of a commit, copied into each job's workspace.

    Exporting is a git process and a tree walk; copying a small tree is a fraction of that, and
    a 50-job pipeline would otherwise pay for 50 exports. Each job still gets its own copy, so
    jobs never see each other's changes. The most recent `keep` exports are kept; `prepare`
    lets the server export a commit as soon as its run is queued, before a runner asks.
    """

    def __init__(self, root: Path, keep: int = 16) -> None:
        self.root = root
        self.keep = keep
        self._lock = threading.Lock()
        self._exporting: dict[tuple[str, str], threading.Lock] = {}
        self._ready: OrderedDict[tuple[str, str], Path] = OrderedDict()

    def prepare(self, repo: Path, sha: str) -> Path:
        """Export the commit unless it is already (thread-safe; blocking)."""
        key = (str(repo), sha)
        with self._lock:
            if key in self._ready:
                self._ready.move_to_end(key)
                return self._ready[key]
            exporting = self._exporting.setdefault(key, threading.Lock())
        with exporting:
            with self._lock:
                if key in self._ready:
                    return self._ready[key]
            source = self.root / f"source-{sha}-{abs(hash(str(repo))):x}"
            if source.exists():
                shutil.rmtree(source)
            export_commit(repo, sha, source)
            with self._lock:
                self._ready[key] = source
                self._exporting.pop(key, None)
                stale = []
                while len(self._ready) > self.keep:
                    stale.append(self._ready.popitem(last=False)[1])
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return source

    async def checkout(self, repo: Path, sha: str, dest: Path) -> None:
        source = await asyncio.to_thread(self.prepare, repo, sha)
        await asyncio.to_thread(shutil.copytree, source, dest, symlinks=True)

    def clear(self) -> None:
        with self._lock:
            sources, self._ready = list(self._ready.values()), OrderedDict()
        for source in sources:
            shutil.rmtree(source, ignore_errors=True)


class Sources(Protocol):
    """Where a job's workspace comes from: a local export (SourceCache), or the server's copy
    for a remote agent (conveyor.runner.agent)."""

    async def checkout(self, repo: Path, sha: str, dest: Path) -> None: ...


@dataclass(frozen=True)
class RunnerSettings:
    workspaces: Path
    artifacts: ArtifactStore
    secrets: Secrets
    sources: Sources
    keep_workspaces: bool = False
    # The runner's own environment: only where the container engine is found and what its
    # client reads (PATH, HOME, CONTAINER_HOST...). Steps never see it.
    base_env: Mapping[str, str] | None = None
    # How steps are isolated (conveyor.sandbox); None: configured from ``settings``, and
    # never silently off.
    sandbox: Sandbox | None = None
    # The runner's settings (CONVEYOR_LIMIT_JOB_LOG, CONVEYOR_CONTAINER_ENGINE, the sandbox's),
    # as the process that runs it read them at start.
    conveyor: Settings = field(default_factory=Settings)


class LogBuffer:
    """Collects masked lines and hands them to the reporter in batches, while the step runs.

    The job's lines together are held to ``job_limit`` bytes: past it, one line says so and
    the rest is discarded (the job goes on), as a step's own limit does for its output."""

    def __init__(self, reporter: JobReporter, masker: SecretMasker) -> None:
        self.reporter = reporter
        self.masker = masker
        self.position: int | None = None
        self.job_limit: int | None = None
        self.kept = 0
        self.truncated = False
        self._lines: list[tuple[dt.datetime, str]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def line(self, text: str) -> None:
        if self.truncated:
            return
        masked = self.masker.mask(text)
        # Bytes as stored (UTF-8); most lines are ASCII, whose length is known without encoding.
        self.kept += len(masked) if masked.isascii() else len(masked.encode("utf-8", "replace"))
        if self.job_limit is not None and self.kept > self.job_limit:
            self.truncated = True
            masked = (
                f"[conveyor] log truncated: the job's output reached its limit of "
                f"{format_bytes(self.job_limit)} (job_log_limit); the rest of this job's "
                "output was discarded"
            )
        self._lines.append((dt.datetime.now(dt.UTC), masked))
        if len(self._lines) >= LOG_FLUSH_LINES:
            self._wake.set()

    async def flush(self) -> None:
        lines, self._lines = self._lines, []
        await self.reporter.log(self.position, lines)

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOG_FLUSH_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._lines:
                await self.flush()

    async def __aenter__(self) -> LogBuffer:
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


# What a step's output says when it could not fork or allocate: with the sandbox's limits in
# place, the likely reason, which the step's failure then names.
_NO_PROCESSES = ("Resource temporarily unavailable", "Cannot fork", "fork: retry")
_NO_MEMORY = ("Cannot allocate memory", "MemoryError", "std::bad_alloc", "out of memory")


class _LimitWatch:
    """Passes a step's lines on, noting any that say a sandbox limit was hit."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.processes = False
        self.memory = False

    def __call__(self, text: str) -> None:
        if not self.processes and any(m in text for m in _NO_PROCESSES):
            self.processes = True
        if not self.memory and any(m in text for m in _NO_MEMORY):
            self.memory = True
        self.on_line(text)


def _argv(step: StepPlan) -> list[str]:
    if step.shell == "sh":
        return ["sh", "-e", "-c", step.run]
    return ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.run]


def _describe(
    result: ProcessResult, timeout: float, sandbox: Sandbox | None = None
) -> tuple[StepStatus, str | None]:
    if result.cancelled:
        return StepStatus.CANCELLED, "cancelled"
    if result.timed_out:
        return StepStatus.FAILED, f"timed out after {timeout:g}s"
    if result.exit_code == 0:
        return StepStatus.SUCCEEDED, None
    xfsz = (-signal.SIGXFSZ, 128 + signal.SIGXFSZ)
    if sandbox is not None and sandbox.enabled and result.exit_code in xfsz:
        # A shell reports a child killed by a signal as 128 + its number.
        size = format_bytes(sandbox.limits.file_size)
        return StepStatus.FAILED, f"stopped: a file it wrote reached this runner's limit of {size}"
    if result.exit_code == 127:
        return StepStatus.FAILED, "command not found (exit 127)"
    if result.exit_code is not None and result.exit_code < 0:
        return StepStatus.FAILED, f"killed by signal {-result.exit_code}"
    return StepStatus.FAILED, f"exited with {result.exit_code}"


class JobExecutor:
    def __init__(
        self,
        plan: JobPlan,
        context: RunContext,
        reporter: JobReporter,
        settings: RunnerSettings,
        cancel: asyncio.Event,
        attempt: int = 1,
    ) -> None:
        self.plan = plan
        self.context = context
        self.reporter = reporter
        self.settings = settings
        self.cancel = cancel
        # The job's attempt: 1, then 2... each time it is leased again after its runner was
        # lost (its lease token). Its lines are stored as that attempt's; CONVEYOR_ATTEMPT.
        self.attempt = max(1, attempt)
        self.workspace = settings.workspaces / f"run-{context.run_id}" / plan.name

    async def execute(self) -> JobStatus:
        """Run the job and report its end; a lost lease ends it quietly (someone else has it)."""
        beating = asyncio.create_task(self._heartbeat())
        try:
            status, reason = await self._run_reported()
            await self.reporter.job_finished(status, reason)
        except StaleLease:
            self.cancel.set()
            return JobStatus.CANCELLED
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError, StaleLease):
                await beating
        return status

    async def _heartbeat(self) -> None:
        """Keep the lease alive while the job runs, and hear of cancellation from afar."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                if await self.reporter.heartbeat():
                    self.cancel.set()
            except StaleLease:
                self.cancel.set()  # another runner has the job: stop its steps here
                raise

    async def _run_reported(self) -> tuple[JobStatus, str | None]:
        masker = SecretMasker(self.settings.secrets.all_values())
        async with LogBuffer(self.reporter, masker) as log:
            try:
                return await self._execute(log, masker)
            except ConveyorError as exc:
                if isinstance(exc, StaleLease):
                    raise
                log.position = None
                log.line(f"[conveyor] {exc.message}")
                if exc.hint:
                    log.line(f"[conveyor] hint: {exc.hint}")
                return JobStatus.FAILED, exc.message
            finally:
                if not self.settings.keep_workspaces:
                    await asyncio.to_thread(shutil.rmtree, self.workspace, True)

    async def _execute(self, log: LogBuffer, masker: SecretMasker) -> tuple[JobStatus, str | None]:
        # Resolved here, so that a runner that cannot sandbox fails the job saying why.
        sandbox = self.settings.sandbox
        if sandbox is None:
            sandbox = await asyncio.to_thread(default_sandbox, self.settings.conveyor)
        self._limit_pipeline(sandbox, log)
        log.job_limit = self.plan.job_log_limit
        if self.attempt > 1:
            log.line(
                f"[conveyor] attempt {self.attempt} of this job: a runner that had it "
                "stopped answering, so it starts over from its first step"
            )
        secrets = self.settings.secrets
        job_env = {k: secrets.substitute(v) for k, v in self.plan.env.items()}
        step_envs = [{k: secrets.substitute(v) for k, v in s.env.items()} for s in self.plan.steps]
        for value in secrets.all_values():
            masker.add(value)
        if self.workspace.exists():
            await asyncio.to_thread(shutil.rmtree, self.workspace)
        self.workspace.parent.mkdir(parents=True, exist_ok=True)
        await self.settings.sources.checkout(
            Path(self.context.repository), self.context.sha, self.workspace
        )
        await asyncio.to_thread(sandbox.claim, self.workspace)
        deadline = time.monotonic() + self.plan.timeout
        failed: str | None = None
        for position, step in enumerate(self.plan.steps):
            log.position = position
            if self.cancel.is_set():
                await self.reporter.step_finished(position, StepOutcome(StepStatus.CANCELLED))
                continue
            runs = {
                "success": failed is None,
                "failure": failed is not None,
                "always": True,
            }[step.condition]
            if not runs:
                await self.reporter.step_finished(position, StepOutcome(StepStatus.SKIPPED))
                continue
            # Only what the engine and the pipeline give the step: the sandbox adds PATH, HOME
            # and LANG, never the runner's own environment.
            env = {
                **self.context.variables(self.plan.name),
                "CONVEYOR_WORKSPACE": str(self.workspace),
                "CONVEYOR_STEP": step.name,
                **job_env,
                **step_envs[position],
            }
            outcome = await self._run_step(position, step, env, log, deadline, sandbox)
            await log.flush()
            await self.reporter.step_finished(position, outcome)
            if (
                outcome.status is StepStatus.FAILED
                and not step.continue_on_error
                and failed is None
            ):
                failed = f"step {step.name} {outcome.reason}"
        if self.cancel.is_set():
            return JobStatus.CANCELLED, "cancelled"
        if failed is not None:
            return JobStatus.FAILED, failed
        if time.monotonic() > deadline:
            return JobStatus.FAILED, f"job timed out after {self.plan.timeout:g}s"
        if self.plan.artifacts:
            files = await asyncio.to_thread(collect_artifacts, self.workspace, self.plan.artifacts)
            await asyncio.to_thread(self.settings.artifacts.store_all, self.workspace, files)
            await self.reporter.artifacts(files)
            for f in files:
                log.line(f"[conveyor] artifact {f.path} {f.digest} ({f.size} bytes)")
        return JobStatus.SUCCEEDED, None

    def _limit_pipeline(self, sandbox: Sandbox, log: LogBuffer) -> None:
        """Hold the job to the runner's ceilings: a pipeline may ask for less time or log
        than they allow, never more."""
        limits, plan = sandbox.limits, self.plan
        if plan.timeout > limits.job_time:
            log.line(
                f"[conveyor] the job's timeout ({plan.timeout:g}s) is above this runner's "
                f"ceiling of {limits.job_time:g}s: the job stops after {limits.job_time:g}s"
            )
        job_ceiling = self.settings.conveyor.limit_job_log
        if plan.job_log_limit > job_ceiling:
            log.line(
                f"[conveyor] job_log_limit {format_bytes(plan.job_log_limit)} is above this "
                f"runner's ceiling of {format_bytes(job_ceiling)}: the job keeps at most "
                f"{format_bytes(job_ceiling)} of output"
            )
        if plan.log_limit > limits.log_bytes:
            log.line(
                f"[conveyor] log_limit {format_bytes(plan.log_limit)} is above this runner's "
                f"ceiling of {format_bytes(limits.log_bytes)}: each step keeps at most "
                f"{format_bytes(limits.log_bytes)} of output"
            )
        self.plan = plan.model_copy(
            update={
                "timeout": min(plan.timeout, limits.job_time),
                "log_limit": min(plan.log_limit, limits.log_bytes),
                "job_log_limit": min(plan.job_log_limit, job_ceiling),
                "steps": [
                    s.model_copy(update={"timeout": min(s.timeout, limits.job_time)})
                    for s in plan.steps
                ],
            }
        )

    async def _run_step(
        self,
        position: int,
        step: StepPlan,
        env: dict[str, str],
        log: LogBuffer,
        deadline: float,
        sandbox: Sandbox,
    ) -> StepOutcome:
        cwd = self.workspace
        if step.working_directory:
            cwd = (self.workspace / step.working_directory).resolve()
            if not cwd.is_relative_to(self.workspace.resolve()) or not cwd.is_dir():
                return StepOutcome(
                    StepStatus.FAILED,
                    reason=f"working directory '{step.working_directory}' is not a folder of the "
                    "commit",
                )
        attempts = step.retries + 1
        status, exit_code, reason = StepStatus.FAILED, None, None
        for attempt in range(1, attempts + 1):
            await self.reporter.step_started(position, attempt)
            timeout = max(0.0, min(step.timeout, deadline - time.monotonic()))
            # The job's attempt (it counts up when the job is leased again); the step's own
            # retries count in CONVEYOR_STEP_ATTEMPT.
            env["CONVEYOR_ATTEMPT"] = str(self.attempt)
            env["CONVEYOR_STEP_ATTEMPT"] = str(attempt)

            # --- container support (`image:`, see conveyor.runner.container) ---
            argv, process_env, engine, container = _argv(step), env, "", None
            confined: Sandbox | None = sandbox
            if self.plan.image:
                # The container is the step's isolation; the engine's client runs here.
                confined = None
                runner_env = self.settings.base_env or os.environ
                engine = container_engine(runner_env, self.settings.conveyor.container_engine)
                container = container_name(self.context.run_id, self.plan.name, step.name, attempt)
                variables = step_variables(env, [*self.plan.env, *step.env])
                process_env = client_env(client_host_env(runner_env), variables)
                argv = container_argv(
                    engine,
                    self.plan.image,
                    argv,
                    workspace=self.workspace,
                    env=variables,
                    workdir=step.working_directory or "",
                    name=container,
                )
            watch = _LimitWatch(log.line)
            try:
                result = await run_process(
                    argv,
                    cwd=cwd,
                    env=process_env,
                    on_line=watch,
                    timeout=timeout,
                    cancel=self.cancel,
                    max_bytes=self.plan.log_limit,
                    kill_grace=KILL_GRACE_SECONDS,
                    sandbox=confined,
                    sandbox_root=self.workspace,
                )
            finally:
                if container is not None and await remove_container(
                    engine, container, env=process_env
                ):
                    log.line(f"[conveyor] removed container {container} left by the step")
            # --- end of container support ---
            limit = step.timeout if step.timeout <= self.plan.timeout else self.plan.timeout
            status, reason = _describe(result, limit, confined)
            exit_code = result.exit_code
            if status is StepStatus.FAILED and confined is not None and confined.enabled:
                reason = _limit_hit(reason, watch, result, confined, log)
            if status is not StepStatus.FAILED or attempt == attempts or self.cancel.is_set():
                return StepOutcome(status, exit_code, reason, attempt)
            log.line(f"[conveyor] attempt {attempt} of {attempts} {reason}; trying again")
        return StepOutcome(status, exit_code, reason, attempts)


def _limit_hit(
    reason: str | None,
    watch: _LimitWatch,
    result: ProcessResult,
    sandbox: Sandbox,
    log: LogBuffer,
) -> str | None:
    """The failure's reason, naming the sandbox limit the step hit: as its control group
    counted (when it had one), else as its output says."""
    limits = sandbox.limits
    met = result.limits
    if met is not None and met.oom_kills:
        hit = f"it ran out of memory (this runner allows {format_bytes(limits.memory)} per job)"
    elif met is not None and met.refused_forks:
        hit = f"it could not start more processes (this runner allows {limits.processes} per job)"
    elif watch.processes:
        hit = f"it could not start more processes (this runner allows {limits.processes})"
    elif watch.memory:
        hit = (
            "it ran out of memory (this runner allows "
            f"{format_bytes(limits.memory)} of address space per process)"
        )
    else:
        return reason
    log.line(f"[conveyor] {hit}")
    return f"{reason}: {hit}" if reason else hit
