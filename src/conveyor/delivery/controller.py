"""Carrying out deployments: the I/O half of promotion.

engine.promotion decides which deployment starts; this module does it (bundle, target, health,
switch, verification) and reports every phase back to the store before moving on. One target
object lives per service and environment for the server's lifetime (it owns the environment's
proxy), and a restarted server re-adopts what the store says is serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from conveyor.aio import wake_loop
from conveyor.checks.base import CheckResult, Outcome, combine
from conveyor.checks.health import run_health, run_verify
from conveyor.delivery.bundles import KEEP_DEFAULT, prepare_bundle, prune_service
from conveyor.delivery.monitor import Monitor
from conveyor.deploy_states import ApprovalStatus, DeploymentKind, DeploymentStatus
from conveyor.engine import outcomes, promotion
from conveyor.engine.driver import process_owner
from conveyor.engine.monitoring import newest_success
from conveyor.engine.recording import previous_success
from conveyor.engine.recovery import owner_alive
from conveyor.errors import ConveyorError
from conveyor.facts import Change
from conveyor.metrics.ranges import commit_range
from conveyor.runner.artifacts import ArtifactStore
from conveyor.sandbox import Sandbox
from conveyor.secrets import SECRET_REF, referenced
from conveyor.sources.mirror import source_for
from conveyor.spec.models import Environment
from conveyor.store.db import Store
from conveyor.store.models import Approval, Deployment, EnvironmentState, Release, utcnow
from conveyor.store.vault import scoped
from conveyor.targets.base import (
    Edge,
    Instance,
    ReleaseBundle,
    Target,
    TargetContext,
    TargetError,
)
from conveyor.targets.registry import target_class

log = logging.getLogger("conveyor.delivery")
D = DeploymentStatus


@dataclasses.dataclass
class _Job:
    """What one deployment needs, read from the store once."""

    id: int
    kind: DeploymentKind
    service: str
    environment: str
    tier: str
    release_id: int
    config: Environment
    serving: Instance | None
    kept: Instance | None


class DeploymentLog:
    """Lines of one deployment, written to its record in batches."""

    def __init__(self, store: Store, deployment_id: int) -> None:
        self.store, self.id, self.pending = store, deployment_id, list[str]()

    def __call__(self, line: str) -> None:
        self.pending.append(f"{utcnow().strftime('%H:%M:%S.%f')[:-3]} {line}")

    def flush(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            outcomes.record_log(self.store, self.id, lines)


class DeliveryController:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        *,
        prometheus_url: str | None = None,
        poll_seconds: float = 0.5,
        wake: asyncio.Event | None = None,
        sandbox: Sandbox | None = None,
        keep_bundles: int | None = None,
        monitor: bool = True,
        edge: Edge | None = None,
    ) -> None:
        self.store = store
        # Release bundles kept per service beyond those an environment needs
        # (CONVEYOR_KEEP_BUNDLES, as the server read it).
        self.keep_bundles = KEEP_DEFAULT if keep_bundles is None else keep_bundles
        self.artifacts = artifacts
        # Where start, verify and health commands run (None: from the server's environment).
        self.sandbox = sandbox
        # Who holds the stable ports (None: each target, inside this process; decision 0014).
        self.edge = edge
        # --prometheus-url or CONVEYOR_PROMETHEUS_URL, as the server read it.
        self.prometheus_url = prometheus_url
        self.poll_seconds = poll_seconds
        self.owner = process_owner()
        self.wake = wake or asyncio.Event()
        self._targets: dict[tuple[str, str], Target] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._publishing: set[int] = set()
        # Watches what serves between deployments (delivery.monitor); tests drive it by hand.
        self.monitor = Monitor(self) if monitor else None

    # --- the loop ----------------------------------------------------------------------------

    async def serve(self) -> None:
        watching: asyncio.Task[None] | None = None
        try:
            await self.recover()
            if self.monitor is not None:
                watching = asyncio.create_task(self.monitor.run())
            await wake_loop(self.tick, self.wake, self.poll_seconds)
        finally:
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            await self.close()

    async def tick(self) -> None:
        """Publish what waits for it; start what may start."""
        for release_id in await asyncio.to_thread(self._unpublished):
            if release_id not in self._publishing:
                self._publishing.add(release_id)
                self._spawn(-release_id, self._publish(release_id))
        for started in await asyncio.to_thread(promotion.start_next, self.store, self.owner):
            self._spawn(started.deployment_id, self._carry(started.deployment_id))

    def _spawn(self, key: int, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def idle(self) -> None:
        """Wait until nothing is being carried out (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        for target in self._targets.values():
            await target.close()
        self._targets.clear()

    # --- targets -----------------------------------------------------------------------------

    def _env_vars(self, job: _Job, *, strict: bool = True) -> dict[str, str]:
        # Only what this environment's env references, for this service and environment.
        raw = {k: str(v) for k, v in job.config.env.items()}
        secrets = scoped(self.store, job.service, referenced(raw.values()), job.environment)
        try:
            values = {k: secrets.substitute(v) for k, v in raw.items()}
        except ConveyorError as exc:
            if strict:
                raise
            # Re-adopting what serves needs no secret; a missing one must not stop it.
            log.warning("%s %s: %s", job.service, job.environment, exc.message)
            values = {k: v for k, v in raw.items() if not SECRET_REF.search(v)}
        # Nothing of the server's own environment (its CONVEYOR_* settings, tokens, virtualenv)
        # reaches a release, whichever target starts it: sandboxed commands get PATH, HOME and
        # LANG from the sandbox.
        return {
            **values,
            "CONVEYOR": "true",
            "CONVEYOR_SERVICE": job.service,
            "CONVEYOR_ENVIRONMENT": job.environment,
            "CONVEYOR_TIER": job.tier,
        }

    def target(self, job: _Job, log_line: Callable[[str], None], *, strict: bool = True) -> Target:
        """The environment's target, made on first use; its context follows the deployment.
        Not `strict`: a secret that cannot be resolved is left out instead of failing."""
        key = (job.service, job.environment)
        options = {
            "strategy": job.config.deploy.strategy,
            **({"start": job.config.deploy.start} if job.config.deploy.start else {}),
            **job.config.deploy.options,
        }
        ctx = TargetContext(
            service=job.service,
            environment=job.environment,
            tier=job.tier,
            options=options,
            env=self._env_vars(job, strict=strict),
            state_dir=self.store.home / "deploy" / job.service / job.environment,
            log=log_line,
            keep=job.config.keep,
            sandbox=self.sandbox,
            edge=self.edge,
        )
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        target = self._targets.get(key)
        if target is None or target.name != job.config.deploy.target:
            target = target_class(job.config.deploy.target)(ctx)
            self._targets[key] = target
        else:
            target.ctx = ctx
        return target

    # --- one deployment ----------------------------------------------------------------------

    def _load(self, deployment_id: int) -> _Job:
        with self.store.session() as session:
            dep = session.get(Deployment, deployment_id)
            assert dep is not None
            env = session.scalar(
                select(EnvironmentState).where(
                    EnvironmentState.service_id == dep.service_id,
                    EnvironmentState.name == dep.environment,
                )
            )
            serving = (
                Instance(env.current_release_id, env.url, dict(env.instance))
                if env is not None and env.current_release_id and env.instance
                else None
            )
            kept = None
            if dep.instance:
                # Placed before the server died: the instance to route to (a rollback) or check
                # (a deployment) again, if it still runs.
                kept = Instance(dep.release_id, dep.url, dict(dep.instance))
            elif dep.kind == DeploymentKind.ROLLBACK:
                earlier = newest_success(session, dep, Deployment.release_id == dep.release_id)
                if earlier is not None and earlier.instance:
                    kept = Instance(earlier.release_id, earlier.url, dict(earlier.instance))
            return _Job(
                id=dep.id,
                kind=DeploymentKind(dep.kind),
                service=dep.service.name,
                environment=dep.environment,
                tier=dep.tier,
                release_id=dep.release_id,
                config=promotion.environment_config(dep),
                serving=serving,
                kept=kept,
            )

    async def _carry(self, deployment_id: int) -> None:
        line = DeploymentLog(self.store, deployment_id)
        try:
            job = await asyncio.to_thread(self._load, deployment_id)
            if job.kind == DeploymentKind.ROLLBACK:
                await self._roll_back(job, line)
            else:
                await self._deploy(job, line)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must end the deployment clearly, not hang it
            log.exception("deployment %s failed unexpectedly", deployment_id)
            line(f"internal error: {exc}")
            await self._fail(deployment_id, f"internal error: {exc}", serving=True, line=line)
        finally:
            await asyncio.to_thread(line.flush)
            await asyncio.to_thread(self._prune, deployment_id)
            self.wake.set()

    def _prune(self, deployment_id: int) -> None:
        """Drop the bundles the deployment's service no longer needs; a failure costs disk
        space, never the deployment."""
        with self.store.session() as session:
            dep = session.get(Deployment, deployment_id)
            service = dep.service.name if dep is not None else None
        if service is None:
            return
        try:
            gone = prune_service(self.store, service, self.keep_bundles)
        except OSError as exc:
            log.warning("the release bundles of %s could not be pruned: %s", service, exc)
            return
        if gone:
            log.info("removed the bundles of %s releases %s", service, gone)

    async def _deploy(self, job: _Job, line: DeploymentLog) -> None:
        try:
            bundle = await asyncio.to_thread(
                prepare_bundle, self.store, self.artifacts, job.release_id
            )
            target = self.target(job, line)
        except ConveyorError as exc:  # e.g. an unknown target: nothing was touched yet
            line(f"deploy failed: {exc.message}")
            await self._fail(job.id, exc.message, serving=False, line=line)
            return
        # Resumed after the server died: its candidate (placed before) is checked again if it
        # still runs, otherwise the release is deployed again from the start (idempotent).
        candidate = job.kept
        switched = (
            candidate is not None
            and job.serving is not None
            and job.serving.state == candidate.state
        )
        reused = None
        if candidate is not None:
            try:
                if target.in_place or switched:  # it serves: route to it again
                    alive = await target.adopt(candidate)
                else:  # blue-green, not switched yet: traffic stays where it is until checked
                    alive = (await target.status(candidate)).running
                if alive:
                    reused = candidate
                    line(f"{bundle.version} still runs: checking it again")
                elif not switched:
                    await target.discard(candidate)
            except ConveyorError as exc:
                line(f"the earlier candidate could not be taken back: {exc.message}")
        if reused is not None:
            await self._checked(job, target, bundle, reused, line, switched=switched)
            return
        line(f"deploying {bundle.version} to {job.environment} with the {target.name} target")
        try:
            instance = await target.deploy(bundle, job.serving)
        except ConveyorError as exc:
            line(f"deploy failed: {exc.message}")
            await self._fail(
                job.id,
                exc.message,
                serving=False,
                displaced=target.in_place
                and job.serving is not None
                and not (isinstance(exc, TargetError) and exc.previous_serving),
                line=line,
            )
            return
        await self._checked(job, target, bundle, instance, line, switched=False)

    async def _checked(
        self,
        job: _Job,
        target: Target,
        bundle: ReleaseBundle,
        instance: Instance,
        line: DeploymentLog,
        *,
        switched: bool,
    ) -> None:
        """The rest of a deployment once its release is placed: checks, switch, verification.
        ``switched``: it took traffic before the server died (resumed while verifying)."""
        instance.state.setdefault("endpoint", target.endpoint(instance))
        await self._placed(job.id, instance, serving=target.in_place or switched)
        env = _command_env(target, bundle, instance.url or "")
        outcome, detail = await self._check(job, instance, env, bundle.root, line)
        if outcome is not Outcome.PASS:
            if not target.in_place and not switched:
                await target.discard(instance)
            await self._fail(job.id, detail, serving=target.in_place or switched, line=line)
            return
        if not target.in_place and not switched:
            await target.switch(instance, job.serving)
            line(f"traffic switched to {bundle.version}")
        await asyncio.to_thread(outcomes.record_serving, self.store, job.id, instance.state)
        if job.config.verify:
            await asyncio.to_thread(outcomes.record_checks, self.store, job.id, [], D.VERIFYING)
            url = target.endpoint(instance) or instance.url or ""
            result = await run_verify(
                job.config.verify,
                env=_command_env(target, bundle, url),
                cwd=bundle.root,
                on_line=line,
                sandbox=self.sandbox,
            )
            await asyncio.to_thread(
                outcomes.record_checks, self.store, job.id, [result.as_json()], D.VERIFYING
            )
            if result.outcome is not Outcome.PASS:
                await self._fail(
                    job.id, f"verification failed: {result.detail}", serving=True, line=line
                )
                return
        changes = await asyncio.to_thread(self._changes, job, line)
        await asyncio.to_thread(
            functools.partial(outcomes.succeed, self.store, job.id, changes=changes)
        )
        line(f"{bundle.version} is live in {job.environment}")

    async def _placed(self, deployment_id: int, instance: Instance, *, serving: bool) -> None:
        """Record the placed instance; ``serving``: it takes users' traffic already (in place,
        or a rollback), so the deployment served from now (DORA's change failures)."""
        await asyncio.to_thread(
            functools.partial(
                outcomes.record_placed,
                self.store,
                deployment_id,
                instance.state,
                instance.url,
                serving=serving,
            )
        )

    async def _check(
        self, job: _Job, instance: Instance, env: dict[str, str], cwd: Path, line: DeploymentLog
    ) -> tuple[Outcome, str]:
        """Health checks (their commands run in ``cwd`` with ``env``), and a person's decision
        if they were inconclusive."""
        if job.config.health is None:
            return Outcome.PASS, "no health checks"
        line(f"health checks against {instance.url}")
        await asyncio.to_thread(line.flush)
        results = await run_health(
            job.config.health,
            base_url=instance.url,
            env=env,
            cwd=cwd,
            prometheus_url=self.prometheus_url,
            sandbox=self.sandbox,
        )
        for result in results:
            line(f"{result.kind}: {result.outcome.value} — {result.detail}")
        outcome = combine(results)
        detail = _detail(results, outcome)
        if outcome is Outcome.INCONCLUSIVE:
            approval = await asyncio.to_thread(
                outcomes.record_checks, self.store, job.id, [r.as_json() for r in results], D.HELD
            )
            assert approval is not None
            line(f"checks inconclusive: waiting for a person (approval {approval})")
            await asyncio.to_thread(line.flush)
            decided = await self._decision(approval)
            if decided is ApprovalStatus.APPROVED:
                return Outcome.PASS, "accepted by a person after inconclusive checks"
            return Outcome.FAIL, f"inconclusive checks, then {decided.value}: {detail}"
        await asyncio.to_thread(
            outcomes.record_checks, self.store, job.id, [r.as_json() for r in results], D.CHECKING
        )
        return outcome, detail

    async def _decision(self, approval_id: int) -> ApprovalStatus:
        while True:
            await asyncio.to_thread(promotion.expire_approvals, self.store)
            with self.store.session() as session:
                approval = session.get(Approval, approval_id)
                assert approval is not None
                status = ApprovalStatus(approval.status)
            if status.terminal:
                return status
            await asyncio.sleep(self.poll_seconds)

    async def _fail(
        self,
        deployment_id: int,
        reason: str,
        *,
        serving: bool,
        line: DeploymentLog,
        displaced: bool | None = None,
    ) -> None:
        await asyncio.to_thread(line.flush)
        rollback = await asyncio.to_thread(
            functools.partial(
                outcomes.fail,
                self.store,
                deployment_id,
                reason,
                serving=serving,
                displaced=displaced,
            )
        )
        if rollback is not None:
            line(f"rolling back (deployment {rollback})")
            await self._carry(rollback)

    async def _roll_back(self, job: _Job, line: DeploymentLog) -> None:
        try:
            bundle = await asyncio.to_thread(
                prepare_bundle, self.store, self.artifacts, job.release_id
            )
            target = self.target(job, line)
        except ConveyorError as exc:
            await self._fail(job.id, f"rollback failed: {exc.message}", serving=True, line=line)
            return
        line(f"rolling {job.environment} back to {bundle.version}")
        try:
            instance = await target.rollback(job.serving, bundle, job.kept)
        except ConveyorError as exc:
            await self._fail(job.id, f"rollback failed: {exc.message}", serving=True, line=line)
            return
        instance.state.setdefault("endpoint", target.endpoint(instance))
        # A rollback routes traffic back as it is placed: it serves from now.
        await self._placed(job.id, instance, serving=True)
        outcome, detail = Outcome.PASS, ""
        health = job.config.health
        if health is not None:
            # A check of recent traffic (prometheus) would still judge the release being
            # undone: its samples are of the failed release's traffic. The checks that observe
            # the restored instance itself decide whether the rollback worked.
            skipped = [
                name
                for name, check in health.configured().items()
                if not getattr(check, "judges_rollback", True)
            ]
            for name in skipped:
                line(f"the {name} check is not run for a rollback")
            health = health.without(*skipped)
        if health is not None:
            results = await run_health(
                health,
                base_url=target.endpoint(instance) or instance.url,
                env=_command_env(target, bundle),
                cwd=bundle.root,
                prometheus_url=self.prometheus_url,
                sandbox=self.sandbox,
            )
            outcome, detail = combine(results), _detail(results, combine(results))
            await asyncio.to_thread(
                outcomes.record_checks,
                self.store,
                job.id,
                [r.as_json() for r in results],
                D.CHECKING,
            )
        if outcome is Outcome.FAIL:
            await self._fail(
                job.id, f"restored release is unhealthy: {detail}", serving=True, line=line
            )
            return
        await asyncio.to_thread(outcomes.succeed, self.store, job.id)
        line(f"{job.environment} is back on {bundle.version}")

    def _changes(self, job: _Job, line: DeploymentLog) -> list[Change]:
        """The deployment's commit range, for lead time; a git failure costs the lead time of
        this deployment, never the deployment itself."""
        with self.store.session() as session:
            release = session.get(Release, job.release_id)
            assert release is not None
            sha, service = release.sha, release.service
            source = str(release.run.commit.get("source") or service.repository)
            previous = previous_success(session, job.service, job.environment)
        try:
            repo = (
                Path(source)
                if Path(source).is_dir()
                else source_for(self.store.home, service.name, service.repository, fetch=False)
            )
            return commit_range(repo, sha, previous)
        except ConveyorError as exc:
            line(f"lead time: the commit range could not be read: {exc.message}")
            return []

    # --- publishing --------------------------------------------------------------------------

    def _unpublished(self) -> list[int]:
        with self.store.session() as session:
            rows = session.scalars(select(Release).order_by(Release.id.desc()).limit(50)).all()
            return [r.id for r in rows if r.publication.get("status") == "pending"]

    async def _publish(self, release_id: int) -> None:
        from conveyor.delivery.publishing import publish_release

        try:
            result = await asyncio.to_thread(
                publish_release, self.store, self.artifacts, release_id
            )
            await asyncio.to_thread(outcomes.record_publication, self.store, release_id, result)
        finally:
            self._publishing.discard(release_id)
            self.wake.set()

    # --- after a restart ---------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish deployments a dead server left mid-way and take back what is serving."""
        now = utcnow()
        resumed: list[int] = []
        owned: set[tuple[str, str]] = set()  # environments a resumed deployment replaces in place
        for deployment_id, candidate, dead in await asyncio.to_thread(
            promotion.interrupted,
            self.store,
            socket.gethostname(),
            lambda owner: owner_alive(owner, None, now),
        ):
            if not await asyncio.to_thread(
                promotion.claim, self.store, deployment_id, dead, self.owner
            ):
                continue  # another server on this machine took it over first
            job = await asyncio.to_thread(self._load, deployment_id)
            line = DeploymentLog(self.store, deployment_id)
            if job.kind == DeploymentKind.ROLLBACK:
                # Putting the verified release back is idempotent (the target routes to the
                # restored instance if it still runs, or starts it again): carry it out again
                # rather than fail it for a reason that was the server's, not the release's.
                line("the server stopped during this rollback: carrying it out again")
                await self._carry(deployment_id)
                continue
            target = self.target(job, line, strict=False)
            serving_now = job.serving is not None and job.serving.state == candidate
            attempt = await asyncio.to_thread(promotion.resume, self.store, deployment_id)
            if attempt is not None:
                # The server's death says nothing about the release: carry the deployment out
                # again (after what serves is taken back, below) and let its checks decide.
                line(
                    "the server stopped during this deployment: carrying it out again "
                    f"(resumption {attempt} of {promotion.MAX_RESUMPTIONS})"
                )
                await asyncio.to_thread(line.flush)
                resumed.append(deployment_id)
                if target.in_place and not serving_now:
                    owned.add((job.service, job.environment))
                continue
            if candidate and not serving_now:
                await target.discard(Instance(job.release_id, None, candidate))
            line("the server stopped during this deployment once more: not carried out again")
            await self._fail(
                deployment_id,
                f"interrupted: the server stopped during the deployment "
                f"{promotion.MAX_RESUMPTIONS + 1} times",
                serving=serving_now or (target.in_place and bool(candidate)),
                line=line,
            )
        for job in await asyncio.to_thread(self._serving):
            if (job.service, job.environment) in owned:
                continue  # its resumed deployment replaced what served: it decides what runs
            line = DeploymentLog(self.store, job.id)
            target = self.target(job, line, strict=False)
            assert job.serving is not None
            try:
                if await target.adopt(job.serving):
                    continue
                await self.restart(job, line)
            except ConveyorError as exc:
                log.error("%s %s could not be restarted: %s", job.service, job.environment, exc)
        for deployment_id in resumed:
            self._spawn(deployment_id, self._carry(deployment_id))

    async def restart(self, job: _Job, line: Callable[[str], None]) -> None:
        """Start the serving release again in place of its dead instance (ConveyorError if it
        cannot be)."""
        target = self.target(job, line)
        bundle = await asyncio.to_thread(prepare_bundle, self.store, self.artifacts, job.release_id)
        instance = await target.deploy(bundle, None)
        await target.switch(instance, None)
        instance.state.setdefault("endpoint", target.endpoint(instance))
        await asyncio.to_thread(
            outcomes.record_restarted, self.store, job.service, job.environment, instance.state
        )

    def _serving(self) -> list[_Job]:
        with self.store.session() as session:
            envs = session.scalars(
                select(EnvironmentState).where(EnvironmentState.current_deployment_id.is_not(None))
            ).all()
            ids = [e.current_deployment_id for e in envs if e.instance]
        return [self._load(i) for i in ids if i is not None]


def _command_env(target: Target, bundle: ReleaseBundle, url: str | None = None) -> dict[str, str]:
    """What the commands of checks, verification and rollbacks get: the target's environment,
    the release, and (for checks of a placed release) where it answers."""
    where = {} if url is None else {"CONVEYOR_DEPLOY_URL": url}
    return {**target.ctx.env, **bundle.variables(), **where}


def _detail(results: list[CheckResult], outcome: Outcome) -> str:
    picked = [r for r in results if r.outcome is outcome] or results
    return "; ".join(f"{r.kind}: {r.detail}" for r in picked) or outcome.value


def expand(text: str, values: dict[str, str]) -> str:
    """$NAME / ${NAME} from ``values`` only (never the shell, never the server's env)."""
    return string.Template(text).safe_substitute(values)
