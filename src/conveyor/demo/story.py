"""`conveyor demo`: three commits of a sample service carried to production by a real
`conveyor server`, told step by step.

Nothing here makes state up: commits are real git commits handed to the server by the installed
git hook; the server's runner builds, tests and packages them; its delivery controller deploys
releases with the process target and checks them; approvals go through the API as two
different people; the demo only waits (polling the API, each wait with a deadline) and says
what happened. Commit 2 carries a bug that only production's settings reveal, so production's
health check fails, the release is rolled back and an incident is opened; commit 3 fixes it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from conveyor.demo import stage
from conveyor.demo.narrate import Narrator
from conveyor.demo.stage import SERVICE, DemoError, Server
from conveyor.events import NoticeEvent

T = TypeVar("T")
POLL_SECONDS = 0.1
DEFAULT_PORT = 8080
# Deadlines of the waits: generous next to what each takes here (a second or two), so that
# only something really stuck ends the story.
HOOK_SECONDS = 20.0
RUN_SECONDS = 120.0
DEPLOY_SECONDS = 90.0
NOTICE_SECONDS = 15.0
TERMINAL_RUN = {"succeeded", "failed", "cancelled", "interrupted", "superseded"}
TERMINAL_DEPLOYMENT = {"succeeded", "failed", "rolled_back", "rejected", "superseded", "cancelled"}
# The DORA report shown at the end: this week, day by day (the story is minutes long).
DORA_QUERY = {"service": SERVICE, "since": "7d", "by": "day"}
DORA_ARGS = f"--service {SERVICE} --since 7d --by day"
COMMITS = {
    1: "Add the hello service",
    2: "Rate-limit clients (RATE_LIMIT, requests per second)",
    3: 'Fix: read RATE_LIMIT as production writes it ("100/s")',
}


@dataclass(frozen=True)
class Options:
    directory: Path | None
    port: int | None  # None: DEFAULT_PORT, or any free port if that one is taken
    interactive: bool
    exit_at_end: bool
    fast: bool
    slack_webhook: str | None = None
    # Prints the DORA figures as `conveyor dora` does (the CLI hands in its own renderer; the
    # demo sits below the CLI and does not import it).
    show_dora: Callable[[dict[str, Any]], None] | None = None

    @property
    def pause(self) -> float:
        """Seconds before the demo approves: time to look at the approval in the UI."""
        return 0.0 if self.fast else 5.0


@dataclass
class Cast:
    """The people of the story, and their tokens."""

    admin: str  # olga: an admin who is also an approver (the token to sign in to the UI with)
    author: str  # sam: wrote every commit; may not approve his own changes
    hook: str  # the git hook's token (trigger scope)


class Api:
    """The server's API as the demo uses it: JSON in, JSON out, errors as DemoError."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=15
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            response = self.client.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise DemoError(f"the server did not answer {method} {path}: {exc}") from None
        if response.status_code >= 400:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        return self.call("POST", path, json=body, token=token)


def until(predicate: Callable[[], T | None], timeout: float, what: str, hint: str) -> T:
    """Poll ``predicate`` until it returns something; DemoError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout:g} s", hint=hint)
        time.sleep(POLL_SECONDS)


def _seconds(start: str | None, end: str | None) -> float | None:
    import datetime as dt

    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _detail(check: dict[str, Any]) -> str:
    """' (the check's detail)', or nothing for a check that gave none."""
    detail = check.get("detail")
    return f" ({detail})" if detail else ""


class Story:
    def __init__(self, options: Options, narrator: Narrator) -> None:
        self.options = options
        self.say = narrator
        self.directory: Path | None = None
        self.server: Server | None = None
        self.api: Api | None = None
        self.cast: Cast | None = None
        self.repo: Path | None = None
        self.notices_seen = 0

    # --- setting the stage ---------------------------------------------------------------------

    def set_up(self) -> None:
        moved = ""
        if self.options.port is not None:
            port = stage.choose_port(self.options.port)
        else:
            try:
                port = stage.choose_port(DEFAULT_PORT)
            except DemoError:
                port = stage.choose_port(0)
                moved = f"  (port {DEFAULT_PORT} is in use)"
        self.directory = stage.prepare_directory(self.options.directory)
        home = self.directory / "home"
        home.mkdir(mode=0o700)  # private, as Conveyor makes its data directories
        self.repo = stage.create_repository(
            self.directory / SERVICE, slack=bool(self.options.slack_webhook)
        )
        self.cast = self._tokens(home)
        self.server = Server(home, port, self.directory / "server.log")
        say = self.say
        say.title("conveyor demo: one service, three commits, from git commit to production")
        say.fact("folder", str(self.directory))
        say.fact("repository", f"{self.repo}  (the sample service, a fresh git repository)")
        say.fact("data", f"{home}  (SQLite, artifacts, releases)")
        with say.waiting("starting conveyor server"):
            began = time.monotonic()
            self.server.start()
        say.fact("server", f"{self.server.url}{moved}  (log: {self.server.log})")
        say.fact("web UI", f"{self.server.url}/signin  — sign in with this token (olga, admin):")
        say.fact("token", self.cast.admin)
        self.api = Api(self.server.url, self.cast.admin)
        self.api.post("/services", {"name": SERVICE, "repository": str(self.repo)})
        if self.options.slack_webhook:
            # A secret of the sample service, as `conveyor secret set` stores one.
            self.api.call(
                "PUT",
                f"/services/{SERVICE}/secrets/SLACK_WEBHOOK",
                json={"value": self.options.slack_webhook},
            )
        # Both in ops: what keeps sam from approving is that the change is his own.
        self.api.post("/users", {"name": "sam", "emails": [stage.AUTHOR[1]], "groups": ["ops"]})
        self.api.post("/users", {"name": "olga", "emails": ["olga@example.com"], "groups": ["ops"]})
        from conveyor.sources.hook import install

        install(self.repo, server=self.server.url, token=self.cast.hook, branches=["main"])
        say.step(
            "ok",
            "server",
            f"up; service {SERVICE} registered; people: sam (ops, the author), olga (ops); "
            "git hook installed",
            time.monotonic() - began,
        )

    def _tokens(self, home: Path) -> Cast:
        """Tokens are made on the data directory before the server starts, as `conveyor token
        create` does (they are what lets anyone talk to the server at all)."""
        from conveyor.server.tokens import create_token
        from conveyor.store.db import Settings, open_store

        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
        try:
            return Cast(
                admin=create_token(store, "demo-olga", ["admin"], "olga"),
                author=create_token(store, "demo-sam", ["approve", "read"], "sam"),
                # As `conveyor hook install` makes it: for this service only, of no user.
                hook=create_token(store, "demo-hook", ["trigger"], services=[SERVICE]),
            )
        finally:
            store.close()

    # --- the story -----------------------------------------------------------------------------

    def tell(self) -> None:
        self.say.chapter("Commit 1: the hello service goes to production")
        release = self._to_approval(1)
        if not self._approve(release):
            return
        self._production_ok(release)

        self.say.chapter("Commit 2: a bug that only production's settings reveal")
        release = self._to_approval(2)
        if not self._approve(release):
            return
        self._production_fails(release)

        self.say.chapter("Commit 3: the fix")
        release = self._to_approval(3)
        if not self._approve(release):
            return
        self._production_ok(release)
        self.say.note(
            "the rollback had restored the service (that ended the incident and its recovery "
            "time); this release removes the cause"
        )

    def _to_approval(self, number: int) -> dict[str, Any]:
        """Commit, run, release, staging (health and smoke tests), the approval request."""
        assert self.repo is not None
        assert self.api is not None
        say, api = self.say, self.api
        began = time.monotonic()
        changed = stage.change_files(self.repo, number)
        sha = stage.commit(self.repo, COMMITS[number])
        what = f"changes {', '.join(changed)}" if changed else "the whole service"
        say.step("ok", "commit", f"{sha[:7]} “{COMMITS[number]}” by Sam Sample ({what})")

        hint = f"see the server's log: {self.server.log if self.server else ''}"
        with say.waiting("the git hook hands the commit to the server"):
            run = until(
                lambda: next(
                    (r for r in api.get("/runs", service=SERVICE) if r["sha"] == sha), None
                ),
                HOOK_SECONDS,
                f"a run for commit {sha[:7]}",
                hint,
            )
        with say.waiting(f"run #{run['id']}: build, unit tests, package"):
            run = until(
                lambda: (r := api.get(f"/runs/{run['id']}"))["status"] in TERMINAL_RUN and r,
                RUN_SECONDS,
                f"the end of run {run['id']}",
                hint,
            )
        jobs = " · ".join(
            f"{j['name']} {'✔' if j['status'] == 'succeeded' else '✖'} {j['duration'] or 0:.1f}s"
            for j in run["jobs"]
        )
        if run["status"] != "succeeded":
            say.step("fail", f"run #{run['id']}", f"{run['status']}: {jobs}")
            raise DemoError(
                f"run {run['id']} {run['status']}", hint=f"`conveyor logs {run['id']}` says why"
            )
        say.step("ok", f"run #{run['id']}", jobs, time.monotonic() - began)

        release: dict[str, Any] = until(
            lambda: next(
                (r for r in api.get("/releases", service=SERVICE) if r["run"] == run["id"]), None
            ),
            HOOK_SECONDS,
            f"the release of run {run['id']}",
            hint,
        )
        detail = api.get(f"/releases/{release['id']}")
        release["version"] = f"r{release['id']}-{sha[:7]}"
        artifacts = ", ".join(f"{a['path']} {a['digest'][:19]}…" for a in detail["artifacts"])
        say.step("ok", "release", f"{release['version']}: {artifacts or 'no artifacts'}")

        staging = self._deployment(release, "staging")
        checks = {c.get("kind"): c for c in self._checks(staging)}
        health = checks.get("http", {})
        if staging["status"] != "succeeded":
            say.step("fail", "staging", f"{staging['status']}: {staging['reason']}")
            raise DemoError(f"staging deployment {staging['id']} {staging['status']}")
        deployed = f"{release['version']} deployed blue-green, health check passed{_detail(health)}"
        say.step("ok", "staging", deployed, _seconds(staging["started_at"], staging["healthy_at"]))
        smoke = f"passed against {staging['url']}{_detail(checks.get('verify', {}))}"
        say.step(
            "ok", "smoke tests", smoke, _seconds(staging["healthy_at"], staging["finished_at"])
        )
        approval = self._approval_requested(release)
        self._inbox([NoticeEvent.APPROVAL_REQUESTED], release)
        approval_rule = f"{approval['required']} of {', '.join(approval['approvers'])}"
        say.step(
            "wait",
            "approval",
            f"#{approval['id']} requested for production: {approval_rule} must approve",
        )
        release["approval"] = approval
        return release

    def _deployment(self, release: dict[str, Any], environment: str) -> dict[str, Any]:
        assert self.api is not None
        api = self.api

        def ended() -> dict[str, Any] | None:
            found = api.get(
                "/deployments", service=SERVICE, environment=environment, release=release["id"]
            )
            mine = [d for d in found if d["kind"] != "rollback"]
            return mine[0] if mine and mine[0]["status"] in TERMINAL_DEPLOYMENT else None

        with self.say.waiting(f"{environment}: deploying {release['version']}"):
            return until(
                ended,
                DEPLOY_SECONDS,
                f"the {environment} deployment of {release['version']}",
                f"`conveyor envs` and the server's log say where it is: {self._log()}",
            )

    def _checks(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.api is not None
        checks: list[dict[str, Any]] = self.api.get(f"/deployments/{deployment['id']}")["checks"]
        return checks

    def _approval_requested(self, release: dict[str, Any]) -> dict[str, Any]:
        assert self.api is not None
        api = self.api
        with self.say.waiting("production: waiting for the approval request"):
            found: dict[str, Any] = until(
                lambda: next(
                    (a for a in api.get("/approvals") if a["release"] == release["id"]), None
                ),
                DEPLOY_SECONDS,
                f"the approval request for {release['version']}",
                self._log(),
            )
        return found

    def _inbox(self, events: list[NoticeEvent], release: dict[str, Any] | None = None) -> None:
        """Wait until the inbox holds these notices (newer than those already told)."""
        assert self.api is not None
        api = self.api

        def arrived() -> list[dict[str, Any]] | None:
            notices = api.get("/inbox", service=SERVICE, after=self.notices_seen)
            got = [n for n in reversed(notices) if n["event"] in events]
            return got if {n["event"] for n in got} >= set(events) else None

        notices = until(arrived, NOTICE_SECONDS, f"inbox notices {', '.join(events)}", self._log())
        self.notices_seen = max(n["id"] for n in notices)
        if len(notices) == 1:
            titles = f"{notices[0]['title']}: {notices[0]['summary']}"
        else:
            titles = " · ".join(n["title"] for n in notices)
        where = "inbox" + (" (Slack: queued)" if self.options.slack_webhook else "")
        self.say.step("ok", "notified", f"{where} ← {titles}")

    def _approve(self, release: dict[str, Any]) -> bool:
        """Sam may not approve his own change; olga approves (after a pause), or, with
        --interactive, whoever the person signs in as in the UI or the CLI."""
        assert self.api is not None
        assert self.cast is not None
        assert self.server is not None
        api, say, approval = self.api, self.say, release["approval"]
        number = approval["id"]
        refused = api.client.post(
            f"/approvals/{number}/approve",
            json={"reason": "ship it"},
            headers={"Authorization": f"Bearer {self.cast.author}"},
        )
        if refused.status_code == 403:
            why = refused.json()["error"]["message"]
            say.step(
                "info", "self-approval", f"sam tries to approve his own change: refused ({why})"
            )
        began = time.monotonic()
        if self.options.interactive:
            say.note(f"approve it in the UI: {self.server.url}/approvals (signed in as olga),")
            say.note(
                f"or: CONVEYOR_URL={self.server.url} CONVEYOR_TOKEN={self.cast.admin} "
                f"conveyor approve {number} --reason '...'"
            )
            with say.waiting(f"waiting for your decision on approval #{number}"):
                while True:
                    current = next(
                        a for a in api.get("/approvals", all="true") if a["id"] == number
                    )
                    if current["status"] != "pending":
                        break
                    time.sleep(0.5)
        else:
            say.countdown(self.options.pause, f"olga (ops) approves #{number}")
            api.post(
                f"/approvals/{number}/approve", {"reason": "staging and its smoke tests passed"}
            )
            current = next(a for a in api.get("/approvals", all="true") if a["id"] == number)
        decision = current["decisions"][-1] if current["decisions"] else {}
        if current["status"] != "approved":
            say.step(
                "fail",
                "approval",
                f"#{number} {current['status']}"
                + (f" by {decision.get('user')}: {decision.get('reason')}" if decision else ""),
            )
            say.note("the release stays out of production; the story ends here")
            return False
        say.step(
            "ok",
            "approved",
            f"#{number} by {decision.get('user')} via {decision.get('via')}: "
            f"“{decision.get('reason') or ''}”",
            time.monotonic() - began,
        )
        return True

    def _production_ok(self, release: dict[str, Any]) -> None:
        deployment = self._deployment(release, "production")
        if deployment["status"] != "succeeded":
            self.say.step("fail", "production", f"{deployment['status']}: {deployment['reason']}")
            raise DemoError(f"production deployment {deployment['id']} {deployment['status']}")
        health = {c.get("kind"): c for c in self._checks(deployment)}.get("http", {})
        self.say.step(
            "ok",
            "production",
            f"{release['version']} live at {deployment['url']}, health check passed"
            f"{_detail(health)}",
            _seconds(deployment["started_at"], deployment["finished_at"]),
        )
        self._inbox([NoticeEvent.DEPLOYMENT_SUCCEEDED])

    def _production_fails(self, release: dict[str, Any]) -> None:
        assert self.api is not None
        api, say = self.api, self.say
        deployment = self._deployment(release, "production")
        if deployment["status"] != "rolled_back":
            say.step("fail", "production", f"{deployment['status']} (expected a rollback)")
            raise DemoError(
                f"production deployment {deployment['id']} {deployment['status']}, not rolled back"
            )
        health = {c.get("kind"): c for c in self._checks(deployment)}.get("http", {})
        say.step(
            "fail",
            "production",
            f"{release['version']} failed its health check: "
            f"{health.get('detail') or deployment['reason']}",
            _seconds(deployment["started_at"], deployment.get("finished_at")),
        )
        rollback: dict[str, Any] = until(
            lambda: next(
                (
                    d
                    for d in api.get("/deployments", service=SERVICE, environment="production")
                    if d["rollback_of"] == deployment["id"] and d["status"] in TERMINAL_DEPLOYMENT
                ),
                None,
            ),
            DEPLOY_SECONDS,
            f"the rollback of deployment {deployment['id']}",
            self._log(),
        )
        say.step(
            "back",
            "rollback",
            f"automatic: deployment #{rollback['id']} put {rollback['version']} back, "
            f"healthy ({rollback['status']})",
            _seconds(rollback["started_at"], rollback["finished_at"]),
        )
        incident: dict[str, Any] = until(
            lambda: next(
                (
                    i
                    for i in api.get("/incidents", service=SERVICE, status="all")
                    if i.get("deployment") == deployment["id"]
                ),
                None,
            ),
            NOTICE_SECONDS,
            f"an incident for deployment {deployment['id']}",
            self._log(),
        )
        say.step("warn", "incident", f"#{incident['id']} opened: {incident['title']}")
        if incident["status"] == "resolved":
            say.step(
                "ok",
                "resolved",
                f"incident #{incident['id']} resolved "
                f"({incident.get('resolved_by') or 'restored'}); "
                f"recovery time {incident['recovery_seconds']:.1f} s",
            )
        self._inbox(
            [
                NoticeEvent.DEPLOYMENT_FAILED,
                NoticeEvent.INCIDENT_OPENED,
                NoticeEvent.DEPLOYMENT_ROLLEDBACK,
                NoticeEvent.INCIDENT_RESOLVED,
            ]
        )

    # --- the ending ----------------------------------------------------------------------------

    def summary(self) -> None:
        """What runs where, the DORA figures (`conveyor dora`'s table, from the same API) and
        the release record of the failed release, oldest entry first."""
        assert self.api is not None
        api, say = self.api, self.say
        say.chapter("Where things stand")
        for env in api.get("/environments", service=SERVICE):
            say.step(
                "ok" if env.get("healthy") else "warn",
                env["environment"],
                f"serving {env.get('version') or env.get('release')} at {env.get('url')}, "
                f"{'healthy' if env.get('healthy') else 'not healthy'}",
            )
        if self.options.slack_webhook:
            sent = [n["status"] for n in api.get("/notifications", channel="slack")]
            say.step(
                "ok" if sent and set(sent) == {"sent"} else "warn",
                "slack",
                ", ".join(f"{sent.count(s)} {s}" for s in ("sent", "pending", "failed"))
                + " (GET /api/v1/notifications?channel=slack has each one's error)",
            )
        if self.options.show_dora is not None:
            say.chapter(f"DORA for {SERVICE} (as `conveyor dora {DORA_ARGS}` prints it)")
            self.options.show_dora(api.get("/dora", **DORA_QUERY))
        releases = api.get("/releases", service=SERVICE)
        failed = next((r for r in releases if r["id"] == 2), None)
        if failed is not None:
            say.chapter(f"The record of release {failed['id']} (GET /api/v1/releases/2/timeline)")
            self._timeline(api.get(f"/releases/{failed['id']}/timeline"))

    def _timeline(self, timeline: dict[str, Any]) -> None:
        for entry in timeline.get("entries", []):
            at = str(entry.get("at") or "")[11:19]
            self.say.say(f"  {at}  {entry.get('kind', ''):<11} {_describe(entry)}")

    def _log(self) -> str:
        return f"see the server's log: {self.server.log}" if self.server else ""

    # --- the end -------------------------------------------------------------------------------

    def shut_down(self) -> None:
        """Stop the server, then the releases and the edge it started; safe to call at any
        point."""
        if self.api is not None:
            self.api.close()
        if self.server is not None and self.server.process is not None:
            began = time.monotonic()
            self.server.stop()
            self.say.note(
                f"stopped the server (pid {self.server.process.pid}) in "
                f"{time.monotonic() - began:.1f} s"
            )
            stage.stop_releases(self.server.home, self.say.note)
            # The edge holding the stable ports outlives a server by design (decision 0014).
            from conveyor.edge.client import stop_edge

            if (edge := stop_edge(self.server.home)) is not None:
                self.say.note(f"stopped the edge (pid {edge})")


def _describe(entry: dict[str, Any]) -> str:
    """One line of the release record, as `conveyor release` words things."""
    kind, status = entry.get("kind"), entry.get("status")
    if kind == "commit":
        return f"{str(entry.get('sha'))[:7]} “{entry.get('subject')}” by {entry.get('author')}"
    if kind == "run":
        jobs = ", ".join(f"{j.get('name')} {j.get('status')}" for j in entry.get("jobs") or [])
        return f"run #{entry.get('run')} {status} in {entry.get('duration') or 0:.1f} s ({jobs})"
    if kind == "release":
        return f"{entry.get('version')} with {len(entry.get('artifacts') or [])} artifact(s)"
    if kind in ("deployment", "rollback"):
        took = _seconds(entry.get("started_at"), entry.get("finished_at"))
        text = f"#{entry.get('deployment')} {entry.get('version')} → {entry.get('environment')}: "
        text += f"{status}" + (f" in {took:.1f} s" if took is not None else "")
        return text + (f" — {entry['reason']}" if entry.get("reason") else "")
    if kind == "approval":
        where = entry.get("environment")
        return f"#{entry.get('approval')} for {where}: {status} ({entry.get('reason')})"
    if kind == "incident":
        recovered = entry.get("recovery_seconds")
        return f"#{entry.get('incident')} {status}: {entry.get('title')}" + (
            f" (recovery {recovered:.1f} s)" if isinstance(recovered, int | float) else ""
        )
    keys = ("environment", "status", "version", "reason")
    return ", ".join(f"{k} {entry[k]}" for k in keys if entry.get(k))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(options: Options, narrator: Narrator | None = None) -> int:
    """Tell the story; returns the exit status (0, or 130 after Ctrl-C)."""
    say = narrator or Narrator()
    story = Story(options, say)
    interrupted = finished = False
    # SIGTERM (a service manager, `timeout`) ends the demo as Ctrl-C does: everything stopped.
    on_term = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C works even when started where SIGINT is ignored (a background job of a script).
    on_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        story.set_up()
        story.tell()
        story.summary()
        assert story.server is not None
        assert story.directory is not None
        say.chapter("Done")
        say.step("ok", "total", f"the whole story took {say.elapsed:.1f} s")
        finished = True
        if not options.exit_at_end:
            say.fact("web UI", f"{story.server.url}  (token above) — Ctrl-C stops everything")
            say.fact("folder", f"{story.directory}  (kept: the repository and the data)")
            story.server.process.wait()  # type: ignore[union-attr]
            say.step("fail", "server", f"stopped by itself:\n{story.server.log_tail()}")
            return 1
    except KeyboardInterrupt:
        say.say("")
        if finished:
            say.step("ok", "stopping", "the server and the releases")
        else:
            interrupted = True
            say.step("warn", "interrupted", "stopping the server and the releases")
    finally:
        # A second Ctrl-C must not leave processes behind half-way through stopping them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            story.shut_down()
        finally:
            signal.signal(signal.SIGINT, on_int)
            signal.signal(signal.SIGTERM, on_term)
        if story.directory is not None:
            say.note(f"the repository and the data are kept in {story.directory}")
    return 130 if interrupted else 0
