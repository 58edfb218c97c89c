"""Typed models of `conveyor.yml` (pydantic v2); the field types live in `fields`."""

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.extensions import ExtensionError, Kind
from conveyor.spec import checks
from conveyor.spec.blocks import ExtensionBlock, target_options
from conveyor.spec.fields import (
    DEFAULT_NOTIFY_EVENTS,
    EXTENSION_PREFIX,
    NOTIFY_EVENTS,
    SKIP_GRAPH_CHECKS,
    TIERS,
    Command,
    Condition,
    Duration,
    Env,
    EnvironmentName,
    GitUrl,
    HttpUrl,
    JobName,
    NotifyEvent,
    Retries,
    ServiceName,
    Shell,
    Size,
    StrList,
    TargetName,
    Tier,
    at_least_one,
    one_or_many,
    user_error,
)

__all__ = ["EXTENSION_PREFIX", "NOTIFY_EVENTS", "SKIP_GRAPH_CHECKS"]


class _Model(BaseModel):
    # Built on first use: blocks of extensions (health, notify) ask the registry, whose
    # modules may use these models.
    model_config = ConfigDict(
        extra="forbid", frozen=True, coerce_numbers_to_str=True, defer_build=True
    )


_IF = "When to run: after earlier steps/jobs succeeded (success), failed (failure), or always."
_TIMEOUT = "Longest time allowed; running longer is a failure."
_RETRIES = "How many times to retry after a failure (0-10)."
_CONTINUE = "A failure is recorded but does not fail the job/run."
_ENV = "Environment variables; numbers and booleans are passed as written."
_SHELL = "Shell that runs `run`: bash or sh. Default: defaults.shell."
_WORKDIR = "Directory to run in, relative to the workspace root."


class Step(_Model):
    """One command of a job."""

    name: str | None = Field(None, description="Name shown in logs and the UI.")
    run: Command = Field(description="The command(s) to execute, run by `shell`.")
    if_: Condition = Field("success", alias="if", description=_IF)
    timeout: Duration | None = Field(None, description=_TIMEOUT)
    retries: Retries | None = Field(None, description=_RETRIES)
    continue_on_error: bool = Field(False, description=_CONTINUE)
    env: Env = Field(default_factory=dict, description=_ENV)
    shell: Shell | None = Field(None, description=_SHELL)
    working_directory: str | None = Field(None, description=_WORKDIR)


class Job(_Model):
    """A node of the CI DAG: one command (`run`) or a list of `steps`, run in one workspace."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["run"]}, {"required": ["steps"]}]}
    )

    needs: StrList = Field(
        default_factory=list, description="Jobs that must finish (successfully) before this one."
    )
    run: Command | None = Field(None, description="The command(s) to execute (one step).")
    steps: list[Step] | None = Field(None, description="Several named steps, instead of `run`.")
    if_: Condition = Field("success", alias="if", description=_IF)
    timeout: Duration | None = Field(None, description=_TIMEOUT + " Default: defaults.timeout.")
    retries: Retries | None = Field(None, description=_RETRIES + " Default: defaults.retries.")
    continue_on_error: bool = Field(False, description=_CONTINUE)
    env: Env = Field(default_factory=dict, description=_ENV)
    artifacts: StrList = Field(
        default_factory=list,
        description="Glob patterns of files to keep, stored by sha256 (the release's payload).",
    )
    image: str | None = Field(None, description="Run the steps in this container image.")
    images: StrList = Field(
        default_factory=list,
        description="Container images this job pushed (e.g. $CONVEYOR_REGISTRY/app:$CONVEYOR_SHA); "
        "the release records each by digest.",
    )
    runs_on: StrList = Field(
        default_factory=list, description="Runner labels required; empty means any runner."
    )
    shell: Shell | None = Field(None, description=_SHELL)
    working_directory: str | None = Field(None, description=_WORKDIR)

    @field_validator("run", mode="before")
    @classmethod
    def _run_given(cls, value: object) -> object:
        if value is None:  # `run:` with nothing after it
            raise user_error("empty_run", "empty run: give the command(s) to execute")
        return value

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, value: list[Step] | None) -> list[Step] | None:
        if value is not None and not value:
            raise user_error("empty_steps", "no steps: give at least one step, or use 'run'")
        return value

    @model_validator(mode="after")
    def _run_or_steps(self) -> Self:
        if self.run is not None and self.steps is not None:
            raise user_error(
                "run_and_steps",
                "job has both 'run' and 'steps': use 'run' for one command, 'steps' for several",
            )
        if self.run is None and self.steps is None:
            raise user_error(
                "no_run", "job has neither 'run' nor 'steps': give the command(s) to execute"
            )
        return self

    def resolved_steps(self, name: str) -> list[Step]:
        """The steps to execute; a job with `run` is one step named after the job. Unnamed
        steps are named after the first line of their command."""
        if self.run is not None:
            return [Step(name=name, run=self.run)]
        steps = self.steps or []
        return [s if s.name else s.model_copy(update={"name": _first_line(s.run)}) for s in steps]


def _first_line(command: str) -> str:
    line = command.strip().splitlines()[0]
    return line if len(line) <= 60 else line[:57] + "..."


class Approval(_Model):
    """A person must approve before the deployment starts."""

    approvers: Annotated[
        StrList, at_least_one("no_approvers", "approval needs at least one approver")
    ] = Field(description="Users or groups who may approve.")
    required: int = Field(1, ge=1, description="How many distinct approvals are needed.")
    self_approval: bool = Field(
        False, description="Whether the author or pusher of the change may approve it."
    )
    timeout: Duration = Field(86400.0, description="How long to wait for approvals.")
    on_timeout: Literal["reject", "approve"] = Field(
        "reject", description="What happens when nobody decided within `timeout`."
    )


class Deploy(_Model):
    """How a release is put into the environment. Keys other than these are options of the
    target (e.g. `hosts` for ssh), checked by the target's options model."""

    model_config = ConfigDict(extra="allow")

    target: TargetName = Field(
        "process", description="Deploy target: process, container, ssh, command, or a plugin's."
    )
    start: str | None = Field(
        None,
        description="Command that starts the service ($PORT is set; with the process target, "
        "$CONVEYOR_DATA_DIR names the environment's data folder, kept across deploys and "
        "rollbacks).",
    )
    strategy: Literal["recreate", "blue-green", "rolling"] = Field(
        "recreate", description="How the old release is replaced by the new one."
    )
    url: HttpUrl | None = Field(
        None,
        description="Where the environment serves (ssh, command and plugin targets): the "
        "web UI links it and checks probe it. http(s) only.",
    )

    @property
    def options(self) -> dict[str, Any]:
        """Target-specific options (every key not modelled above, and `url`)."""
        extra = dict(self.model_extra or {})
        return extra | {"url": self.url} if self.url is not None else extra

    @model_validator(mode="after")
    def _target_options(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(SKIP_GRAPH_CHECKS):
            return self  # the loader checks them itself, with positions
        try:
            target_options(self.target, self.model_extra or {})
        except ExtensionError as exc:
            raise user_error("target", str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise user_error("target_options", f"{where}: {first['msg']}") from None
        return self


class Health(ExtensionBlock):
    """Checks a deployment must pass before it counts as done: one key per check (http,
    command, prometheus, tcp, or a plugin's), run side by side."""

    extension_kind = Kind.CHECK

    @model_validator(mode="after")
    def _some_check(self) -> Self:
        if not self.configured():
            raise user_error("no_checks", f"health has no checks: add {self.choices()}")
        return self


class Monitor(ExtensionBlock):
    """Continuous health of the release that serves: what is checked, how often, and how many
    failed checks (or deaths) before acting. A dead process is restarted with backoff; one that
    keeps failing is rolled back to the last verified release with an incident in a
    production-tier environment, and marked unhealthy (and notified) in other tiers. Checks are
    written as in `health`; without any, the environment's health checks that suit watching
    (http, command, tcp) are made one quick look each."""

    extension_kind = Kind.CHECK

    enabled: bool = Field(True, description="Watch the serving release (false: never).")
    interval: Duration = Field(10.0, description="Time between two checks of the release.")
    failures: int = Field(
        3,
        ge=1,
        description="Failed checks or deaths before acting; as many passing checks in a row "
        "clear them.",
    )

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if value < 0.2:
            raise user_error("interval", "monitor.interval must be at least 200ms")
        return value


class VerifyStep(_Model):
    """A command run against the deployment once it is healthy (smoke/integration tests)."""

    name: str | None = Field(None, description="Name shown in logs and the UI.")
    run: Command = Field(description="Command(s); $CONVEYOR_DEPLOY_URL points at the deployment.")
    timeout: Duration | None = Field(None, description=_TIMEOUT)


class Environment(_Model):
    """A place releases are promoted to."""

    after: str | None = Field(None, description="Environment a release must reach first.")
    tier: Tier | None = Field(
        None,
        description="DORA tier. Default: the environment's name if it is a tier, else staging.",
    )
    approval: Approval | None = Field(None, description="Approval gate before deploying.")
    deploy: Deploy = Field(default_factory=Deploy, description="How to deploy.")
    health: Health | None = Field(None, description="Checks that decide the deployment is done.")
    verify: list[VerifyStep] = Field(
        default_factory=list, description="Verification commands run after health passes."
    )
    monitor: Monitor = Field(
        default_factory=Monitor.of, description="How the serving release is watched afterwards."
    )
    on_failure: Literal["rollback", "hold", "none"] = Field(
        "rollback", description="On failed health/verify: roll back, hold for a person, or nothing."
    )
    supersede: bool = Field(
        False, description="Let the newest ready release skip older queued ones."
    )
    keep: int = Field(3, ge=1, description="Previous releases kept ready for rollback.")
    env: Env = Field(default_factory=dict, description=_ENV)

    @field_validator("verify", mode="before")
    @classmethod
    def _null_verify(cls, value: object) -> object:
        return [] if value is None else value


class Notifier(ExtensionBlock):
    """One notification channel (exactly one of slack, webhook, email, inbox, or a plugin's)
    and the events it is sent."""

    extension_kind = Kind.NOTIFIER

    on: list[NotifyEvent] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_EVENTS),
        description="Events to send. Default: approval.requested, deployment.failed, "
        "deployment.rolledback, run.failed.",
    )

    @field_validator("on", mode="before")
    @classmethod
    def _one_event(cls, value: object) -> object:
        return one_or_many(value)

    @model_validator(mode="before")
    @classmethod
    def _bare_channel(cls, value: object) -> object:
        # `inbox:` alone (null) or `inbox: true` say the same as `inbox: {}`.
        if not isinstance(value, dict):
            return value
        return {k: {} if k != "on" and (v is None or v is True) else v for k, v in value.items()}

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = list(self.configured())
        if not given:
            raise user_error("no_channel", f"notifier needs one of {self.choices()}")
        if len(given) > 1:
            raise user_error(
                "many_channels",
                f"notifier has both '{given[0]}' and '{given[1]}': use one list entry per channel",
            )
        return self

    @property
    def kind(self) -> str:
        """The channel's name (`slack`, `inbox`...)."""
        return next(iter(self.configured()))

    @property
    def channel(self) -> BaseModel:
        """The channel's options."""
        return next(iter(self.configured().values()))


class PushTrigger(_Model):
    """Run for pushes (hook or forge webhook) to matching branches."""

    branches: StrList = Field(description="Branch names or globs, e.g. main, release/*.")
    paths: StrList | None = Field(None, description="Only when a changed file matches a glob.")


class PollTrigger(_Model):
    """Poll a repository for new commits."""

    url: GitUrl = Field(description="Repository URL to poll.")
    interval: Duration = Field(description="Time between polls.")
    branches: StrList = Field(description="Branch names or globs to follow.")


class Triggers(_Model):
    """What starts a run."""

    push: PushTrigger | None = Field(None, description="Pushes to the repository.")
    poll: PollTrigger | None = Field(None, description="Polling a remote repository.")


class Defaults(_Model):
    """Values used by jobs and steps that do not set their own."""

    timeout: Duration = Field(3600.0, description="Default job timeout.")
    shell: Shell = Field("bash", description="Default shell.")
    parallelism: int | None = Field(
        None, ge=1, description="Most jobs of one run at once; default: the runner's capacity."
    )
    log_limit: Size = Field(64 * 1024 * 1024, description="Most log bytes kept per step.")
    job_log_limit: Size = Field(
        256 * 1024 * 1024,
        description="Most log bytes kept per job, all its steps together; then one line says "
        "the rest was discarded, and the job goes on.",
    )
    retries: Retries = Field(0, description="Default retries for jobs.")


class Concurrency(_Model):
    """Runs with the same group run one at a time, in the order they were queued."""

    group: str = Field(min_length=1, description="Runs sharing this key never overlap.")
    supersede: bool = Field(
        False,
        description="When a run is queued, older runs of the group that have not started yet "
        "are cancelled with the reason 'superseded by run N' (visible, never silent).",
    )


class Publish(_Model):
    """Push each release's artifacts to an OCI registry as one artifact, recorded by digest."""

    registry: str = Field(description="Registry host[:port], e.g. 127.0.0.1:5000 or ghcr.io.")
    repository: str | None = Field(None, description="Repository name. Default: the service.")
    insecure: bool = Field(False, description="Talk plain HTTP to the registry (local registries).")


class Pipeline(_Model):
    """A service's `conveyor.yml`: CI jobs, the environments releases go through, notifications."""

    service: ServiceName = Field(description="The deployable thing this file describes.")
    on: Triggers | None = Field(None, description="What starts a run.")
    jobs: dict[JobName, Job] = Field(description="CI: a DAG of jobs run for every change.")
    environments: dict[EnvironmentName, Environment] = Field(
        default_factory=dict, description="CD: the environments a release is promoted through."
    )
    notify: list[Notifier] = Field(default_factory=list, description="Where events are sent.")
    publish: Publish | None = Field(
        None, description="Where releases are published (an OCI registry)."
    )
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults for jobs.")
    concurrency: Concurrency | None = Field(
        None,
        description="Runs with the same key run one at a time (others wait in FIFO order); "
        "a string is the group, or {group, supersede}.",
    )

    @field_validator("concurrency", mode="before")
    @classmethod
    def _group_shorthand(cls, value: object) -> object:
        return {"group": value} if isinstance(value, str | int) else value

    def concurrency_group(self) -> tuple[str | None, bool]:
        """The run's concurrency group and whether newer runs supersede queued ones."""
        if self.concurrency is None:
            return None, False
        return self.concurrency.group, self.concurrency.supersede

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs_given(cls, value: object) -> object:
        if value is None or value == {}:
            raise user_error("no_jobs", "no jobs defined: add at least one job")
        return value

    @field_validator("environments", "notify", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object, info: ValidationInfo) -> object:
        if value is None:  # every entry commented out
            return {} if info.field_name == "environments" else []
        return value

    @field_validator("environments")
    @classmethod
    def _derive_tiers(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        return {
            name: env
            if env.tier is not None
            else env.model_copy(update={"tier": name if name in TIERS else "staging"})
            for name, env in value.items()
        }

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(SKIP_GRAPH_CHECKS):
            return self
        findings = checks.graph_findings(
            {n: [checks.Ref(d, ()) for d in j.needs] for n, j in self.jobs.items()},
            {n: checks.Ref(e.after, ()) if e.after else None for n, e in self.environments.items()},
        )
        if findings:
            raise user_error("graph", "; ".join(f.message for f in findings))
        return self

    def job_order(self) -> list[list[str]]:
        """Topological stages: jobs with no needs first; names sorted within a stage."""
        return checks.stages({n: j.needs for n, j in self.jobs.items()})

    def environment_order(self) -> list[str]:
        """Environments in promotion order (each after the one it names; ties in file order)."""
        return checks.chain_order({n: e.after for n, e in self.environments.items()})

    def secret_references(self) -> set[str]:
        """Names used as `${{ secrets.NAME }}` in any string of the pipeline."""
        return checks.secret_names(self.model_dump(by_alias=True))
