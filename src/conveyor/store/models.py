"""The tables. The events table is the source of truth; the others are projections of it that
are written in the same transaction as the event that changed them."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# BigInteger ids on PostgreSQL, but SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Event(Base):
    """Append-only log of everything that happened (database triggers refuse updates)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(100))
    service: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(Id)
    job_id: Mapped[int | None] = mapped_column(Id)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_events_run", "run_id", "id"), Index("ix_events_type", "type"))


class Service(Base):
    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # A local path (used in place) or a URL (fetched into a mirror under CONVEYOR_HOME).
    repository: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # HMAC secret for forge webhooks: needed in clear to verify signatures, never shown again.
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    allow_unsigned: Mapped[bool] = mapped_column(Boolean, default=False)
    poll_interval: Mapped[float | None] = mapped_column(Float)
    polled_at: Mapped[dt.datetime | None]
    # Last sha seen per branch by polling: {"main": "<sha>"}.
    poll_state: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Token(Base):
    """API tokens: only a SHA-256 of the token is kept (tokens are 256-bit random values, so a
    fast hash is enough: there is nothing to brute-force)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    user: Mapped[str | None] = mapped_column(String(200))
    # What the token may act on; empty: every service / environment / label.
    services: Mapped[list[Any]] = mapped_column(default=list)
    environments: Mapped[list[Any]] = mapped_column(default=list)
    # Runner tokens: the only labels their runners may claim to have.
    labels: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Delivery(Base):
    """Webhook and hook deliveries already accepted, so a replay is recognised and ignored."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(50))
    delivery_id: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # received -> claimed (one server is turning it into a run) -> queued (a run was made) or
    # ignored (filtered out, with the reason).
    status: Mapped[str] = mapped_column(String(20), index=True, default="received")
    # When a server claimed it, by the database's clock: a stale claim is taken over.
    claimed_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    # The push, normalised: {"ref", "before", "after", "pusher", ...}.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[int | None] = mapped_column(Id)

    __table_args__ = (UniqueConstraint("source", "delivery_id", name="uq_deliveries_source_id"),)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    sha: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(500))
    trigger: Mapped[str] = mapped_column(String(50))
    commit: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pipeline: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    # Who drives the run ("host:pid:boot-marker"), and when it last said it was alive.
    owner: Mapped[str | None] = mapped_column(String(300))
    heartbeat_at: Mapped[dt.datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Runs sharing a group never overlap; they start in the order they were queued.
    concurrency_group: Mapped[str | None] = mapped_column(String(300), index=True)

    service: Mapped[Service] = relationship()
    jobs: Mapped[list[Job]] = relationship(
        back_populates="run", order_by="Job.position", cascade="all, delete-orphan"
    )


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    needs: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    runner: Mapped[str | None] = mapped_column(String(300))
    # Fencing token: bumped at every lease, so a runner holding an older one cannot report.
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    # Highest report sequence applied for the current lease: a retried report is not applied twice.
    report_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Bytes of log stored for the job (every attempt), counted into StoreUsage "logs".
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # The attempt (lease token) whose lines the store's log ceiling dropped, 0 for none: its
    # one marker line is written once.
    log_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    run: Mapped[Run] = relationship(back_populates="jobs")
    steps: Mapped[list[Step]] = relationship(
        back_populates="job", order_by="Step.position", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("run_id", "name"),)


class Step(Base):
    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    job: Mapped[Job] = relationship(back_populates="steps")


class LogLine(Base):
    __tablename__ = "log_lines"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    step_position: Mapped[int | None] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[dt.datetime] = mapped_column()
    text: Mapped[str] = mapped_column(Text)
    # The job's attempt that wrote it: 1, then 2... each time the job is leased again.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_log_lines_job_seq"),
        # A page of a log is a range of it, after its cursor (the line id): views/runs.py.
        Index("ix_log_lines_job_id", "job_id", "id"),
    )


class StoreUsage(Base):
    """Running totals of what the store holds, checked against its ceilings in one UPDATE.
    One row today: "logs", the bytes of every stored log line."""

    __tablename__ = "store_usage"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    path: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Release(Base):
    """The immutable result of a successful run: the commit, its artifacts (by digest, through
    the run) and the evidence (every job's outcome). Deployments will hang off it."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), unique=True)
    sha: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where the release was published: {"status": "pending|published|failed|none",
    # "reference", "digest", "images": [...pinned by digest], "error"}. Written once.
    publication: Mapped[dict[str, Any]] = mapped_column(default=dict)

    service: Mapped[Service] = relationship()
    run: Mapped[Run] = relationship()


# The deployment statuses in which a server is carrying a deployment out
# (engine.promotion.EXECUTING).
EXECUTING_SQL = "status IN ('deploying', 'checking', 'verifying', 'held')"


class Deployment(Base):
    """One release put into one environment (kind ``deploy``), or an earlier release put back
    (kind ``rollback``). Its status follows engine.deploy_states; its checks, log and the target's
    instance state are kept on the row so a restarted server can pick it up."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    environment: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(50))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="deploy")
    status: Mapped[str] = mapped_column(String(30), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    # auto (promotion down the chain), manual (`conveyor promote`), rollback, failure (policy).
    trigger: Mapped[str] = mapped_column(String(30))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    # The release that was serving when this one started, and for rollbacks the deployment
    # being undone.
    previous_release_id: Mapped[int | None] = mapped_column(Id)
    rollback_of: Mapped[int | None] = mapped_column(Id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    # When it started serving (health passed), and when it ended (terminal status).
    healthy_at: Mapped[dt.datetime | None]
    # When its failure was detected (a failed check or verification), for recovery time.
    failed_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    checks: Mapped[list[Any]] = mapped_column(default=list)
    log: Mapped[list[Any]] = mapped_column(default=list)
    instance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    url: Mapped[str | None] = mapped_column(Text)
    # Which server process carries it out, for recovery after a crash.
    owner: Mapped[str | None] = mapped_column(String(300))
    # When it began serving users: traffic switched to it, or it replaced (or displaced) what
    # served in place. None: it never did (e.g. a blue-green candidate stopped by its checks),
    # so it is no change failure (docs/metrics.md).
    served_at: Mapped[dt.datetime | None]

    service: Mapped[Service] = relationship()
    release: Mapped[Release] = relationship()

    __table_args__ = (
        Index("ix_deployments_env", "service_id", "environment", "id"),
        # Work in progress (metrics.load): the newest release of a service that succeeded in a
        # tier, and in each environment, found by one seek each.
        Index("ix_deployments_tier_release", "service_id", "tier", "status", "kind", "release_id"),
        Index("ix_deployments_env_release", "service_id", "status", "environment", "release_id"),
        # One deployment carried out per environment at a time, whichever server claims it:
        # a second claim fails in the database, not by timing (engine.promotion.start_next).
        Index(
            "uq_deployments_executing",
            "service_id",
            "environment",
            unique=True,
            postgresql_where=text(EXECUTING_SQL),
            sqlite_where=text(EXECUTING_SQL),
        ),
    )


class EnvironmentState(Base):
    """What serves in one environment of one service: the current release and its instance,
    the last verified release (the rollback target) and whether promotions are held."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(50))
    current_release_id: Mapped[int | None] = mapped_column(Id)
    current_deployment_id: Mapped[int | None] = mapped_column(Id)
    verified_release_id: Mapped[int | None] = mapped_column(Id)
    instance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    url: Mapped[str | None] = mapped_column(Text)
    healthy: Mapped[bool | None] = mapped_column(Boolean)
    since: Mapped[dt.datetime | None]
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    held_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The monitor's last look at what serves (delivery.monitor): when, and what it saw.
    checked_at: Mapped[dt.datetime | None]
    health_detail: Mapped[str | None] = mapped_column(Text)
    # Which server watches this environment, until when (a lease renewed at every check).
    monitor_owner: Mapped[str | None] = mapped_column(String(300))
    monitor_until: Mapped[dt.datetime | None]

    service: Mapped[Service] = relationship()

    __table_args__ = (UniqueConstraint("service_id", "name", name="uq_environments_name"),)


class Approval(Base):
    """A gate on one deployment: who may decide, how many must approve, until when."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    # approval (the environment's gate) or inconclusive (checks could not decide).
    kind: Mapped[str] = mapped_column(String(20), default="approval")
    status: Mapped[str] = mapped_column(String(20), index=True)
    approvers: Mapped[list[Any]] = mapped_column(default=list)
    required: Mapped[int] = mapped_column(Integer, default=1)
    self_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    # People who may not approve: the change's author and pusher.
    excluded: Mapped[list[Any]] = mapped_column(default=list)
    on_timeout: Mapped[str] = mapped_column(String(20), default="reject")
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deadline: Mapped[dt.datetime | None] = mapped_column(index=True)
    decided_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)

    deployment: Mapped[Deployment] = relationship()
    decisions: Mapped[list[ApprovalDecision]] = relationship(
        back_populates="approval", order_by="ApprovalDecision.id"
    )


class ApprovalDecision(Base):
    __tablename__ = "approval_decisions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"), index=True)
    user: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    approval: Mapped[Approval] = relationship(back_populates="decisions")

    __table_args__ = (UniqueConstraint("approval_id", "user", name="uq_approval_decisions_user"),)


class Incident(Base):
    """A production failure: opened by a failed check, an alert or a person; resolved by a
    restore."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    environment: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(30))
    deployment_id: Mapped[int | None] = mapped_column(Id, index=True)
    release_id: Mapped[int | None] = mapped_column(Id)
    fingerprint: Mapped[str | None] = mapped_column(String(200), index=True)
    # The id in the system it came from (an import's id), to import it only once.
    external_id: Mapped[str | None] = mapped_column(String(300), index=True)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The deployment fact an imported incident names ("i:<service>:<id>" or "c<id>").
    deployment_key: Mapped[str | None] = mapped_column(String(300), index=True)

    service: Mapped[Service] = relationship()

    # DORA reads the incidents open during a span (metrics.load), of every service or of one.
    __table_args__ = (
        Index("ix_incidents_opened", "opened_at"),
        Index("ix_incidents_resolved", "resolved_at"),
        Index("ix_incidents_service_opened", "service_id", "opened_at"),
        Index("ix_incidents_service_resolved", "service_id", "resolved_at"),
    )


class User(Base):
    """People known to the server (added with `conveyor user add`; a users file adds more)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    emails: Mapped[list[Any]] = mapped_column(default=list)
    groups: Mapped[list[Any]] = mapped_column(default=list)
    slack_id: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # "scrypt$n$r$p$salt$hash" (hex); None: the user cannot sign in with a password.
    password_hash: Mapped[str | None] = mapped_column(Text)
    # What a password session of this user may do (the token scopes); read-only by default.
    scopes: Mapped[list[Any]] = mapped_column(default=lambda: ["read"])
    # The services / environments those scopes act on; empty: every one.
    services: Mapped[list[Any]] = mapped_column(default=list)
    environments: Mapped[list[Any]] = mapped_column(default=list)


class WebSession(Base):
    """A signed-in browser: only the SHA-256 of its cookie is kept. A token session carries
    the token's id (revoking the token ends it) and its scopes as they were at sign-in."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str | None] = mapped_column(String(200))
    token_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tokens.id"))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    services: Mapped[list[Any]] = mapped_column(default=list)
    environments: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """Outbox: a notice for one notifier, written with the event that caused it and sent
    afterwards with retries, so a crash loses none and a dead channel blocks nothing."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    event: Mapped[str] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(20))
    # The notifier's settings from conveyor.yml (secrets still as ${{ secrets.X }}).
    notifier: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notice: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), index=True, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]


class DeploymentFactRow(Base):
    """What DORA reads about one deployment that ended (succeeded, failed or rolled back),
    from Conveyor's own deployments or from imported history. See metrics.facts."""

    __tablename__ = "deployment_facts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # "c<deployment id>" for Conveyor's own, "i:<service>:<id>" for imported ones.
    key: Mapped[str] = mapped_column(String(300), unique=True)
    source: Mapped[str] = mapped_column(String(20))
    service: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20))
    result: Mapped[str] = mapped_column(String(20))
    sha: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column()
    finished_at: Mapped[dt.datetime] = mapped_column()
    failed_at: Mapped[dt.datetime | None] = mapped_column()
    rollback_of: Mapped[str | None] = mapped_column(String(300))
    fixes_incident: Mapped[bool] = mapped_column(Boolean, default=False)
    stages: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deployment_id: Mapped[int | None] = mapped_column(Id)
    # When it began serving users; None: never (stopped by its checks before taking traffic).
    served_at: Mapped[dt.datetime | None] = mapped_column()

    __table_args__ = (
        Index("ix_deployment_facts_window", "tier", "finished_at"),
        Index("ix_deployment_facts_service", "service", "finished_at"),
        Index("ix_deployment_facts_scope", "service", "tier", "finished_at"),
    )


class ChangeFactRow(Base):
    """A commit a deployment brought to its environment first (its commit range)."""

    __tablename__ = "change_facts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    fact_id: Mapped[int] = mapped_column(ForeignKey("deployment_facts.id"), index=True)
    sha: Mapped[str] = mapped_column(String(64))
    committed_at: Mapped[dt.datetime] = mapped_column()
    authored_at: Mapped[dt.datetime | None] = mapped_column()
    seen_at: Mapped[dt.datetime | None] = mapped_column()


class DoraMark(Base):
    """Something that may change a service's DORA figures from ``at`` on (a deployment fact,
    an incident opened, attributed or resolved), written in the same transaction. The summary
    of each profile re-tallies the marked days and moves past the mark (metrics.summary)."""

    __tablename__ = "dora_marks"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column()


class DoraSummary(Base):
    """One summarised profile (tier, time zone and the settings that change a day's tally): the
    marks it has taken in, and when it was last used (unused profiles are dropped)."""

    __tablename__ = "dora_summaries"

    profile: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_mark_id: Mapped[int] = mapped_column(BigInteger, default=0)
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DoraDay(Base):
    """The DORA engine's tally of one service on one local day of a profile (service "*": all
    services added up): counts, the day's lead times, batch sizes and recovery times as sorted
    float64 arrays (little-endian bytes), and its value-stream stage sums. Reports add days up
    instead of re-reading facts."""

    __tablename__ = "dora_days"

    profile: Mapped[str] = mapped_column(String(300), primary_key=True)
    service: Mapped[str] = mapped_column(String(200), primary_key=True)
    # date.toordinal() of the local day.
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Deployed to that day, one name a line ("*" rows add up every service's).
    environments: Mapped[str] = mapped_column(Text)
    services: Mapped[str] = mapped_column(Text)
    deploys: Mapped[int] = mapped_column(Integer)
    cfr_total: Mapped[int] = mapped_column(Integer)
    cfr_failed: Mapped[int] = mapped_column(Integer)
    rework_total: Mapped[int] = mapped_column(Integer)
    rework_unplanned: Mapped[int] = mapped_column(Integer)
    unrestored: Mapped[int] = mapped_column(Integer)
    leads: Mapped[bytes] = mapped_column(LargeBinary)
    batches: Mapped[bytes] = mapped_column(LargeBinary)
    recoveries: Mapped[bytes] = mapped_column(LargeBinary)
    stages: Mapped[bytes] = mapped_column(LargeBinary)
    # Deployments stopped by their checks before taking traffic; incident recovery (incidents
    # no deployment is blamed for) as sorted float64 seconds, and those not restored yet.
    caught: Mapped[int] = mapped_column(Integer, default=0)
    incident_recoveries: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    incident_unrestored: Mapped[int] = mapped_column(Integer, default=0)


class EventCursor(Base):
    """How far a consumer of the event log has got (e.g. the CDEvents sender), so it resumes
    after a restart without sending anything twice or skipping anything."""

    __tablename__ = "event_cursors"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Secret(Base):
    """A pipeline secret of one service: for all its environments (environment "") or for one,
    which then wins over the service-wide one of the same name. The value is sealed with the
    key file (store.sealing); nothing but the server's own resolution ever reads it back."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        UniqueConstraint("service", "environment", "name", name="uq_secrets_scope_name"),
    )


class Team(Base):
    """A named group of services, measured together (DORA's portfolio: docs/metrics.md)."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))


class TeamService(Base):
    """A service of a team, by name: imported history names services Conveyor never built."""

    __tablename__ = "team_services"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(Id, ForeignKey("teams.id"), index=True)
    service: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("team_id", "service", name="uq_team_services_service"),)


class ConnectorState(Base):
    """How far a connector (conveyor.connectors) has pulled from its tool: its cursor (what
    the next pull asks for), and how its last sync went. Its token is a secret of the scope
    ``connector:<name>`` (store.vault), never here."""

    __tablename__ = "connector_states"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    synced_at: Mapped[dt.datetime | None] = mapped_column()
    tried_at: Mapped[dt.datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
