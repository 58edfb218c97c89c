"""Delivery commands: envs, deployments, promote, rollback, hold/unhold, approvals,
approve/reject, incidents, audit, user. Embedded against the local store, or through a server
when CONVEYOR_URL is set (the server then carries the deployments out)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from conveyor.cli.backend import Backend, HttpBackend, backend
from conveyor.cli.common import actor as acting_user
from conveyor.cli.common import print_json, print_listing, print_table, when
from conveyor.errors import ConveyorError

MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "rolled_back": "↩",
    "rejected": "⊘",
    "superseded": "»",
    "cancelled": "⊘",
    "queued": "·",
    "awaiting_approval": "?",
    "held": "?",
}

# Deployments and approvals are listed first by what ships where.
_SHIPS = ["id", "service", "environment", "release"]


def _ships(item: Mapping[str, Any]) -> list[str]:
    return [str(item["id"]), item["service"], item["environment"], item["version"]]


class Client:
    """The same calls against the local store or a server."""

    def __init__(self, chosen: Backend | None = None) -> None:
        chosen = self.backend = chosen or backend()
        self.http = chosen if isinstance(chosen, HttpBackend) else None
        self.store = None if self.http else chosen.store  # type: ignore[attr-defined]

    @property
    def actor(self) -> str:
        return acting_user()

    def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        return self.http._call("GET", path, params={k: v for k, v in params.items() if v})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.http is not None
        return self.http._call("POST", path, json=body or {})


def _service(client: Client, service: str | None) -> str:
    """The service named, else the one of ./conveyor.yml, else the only one known."""
    if service:
        return service
    path = Path("conveyor.yml")
    if path.is_file():
        from conveyor.spec.load import parse_pipeline

        try:
            return parse_pipeline(path.read_text(encoding="utf-8"), filename=str(path)).service
        except ConveyorError:
            pass
    names = sorted({e["service"] for e in environment_list(client, None)})
    if len(names) == 1:
        return str(names[0])
    raise ConveyorError(
        "which service? give --service NAME" + (f" (known: {', '.join(names)})" if names else "")
    )


def environment_list(client: Client, service: str | None) -> list[dict[str, Any]]:
    """The environments of a service (or all), in the chain order of its latest file."""
    if client.http:
        found: list[dict[str, Any]] = client.get("/environments", service=service)
        return found
    from conveyor.views.delivery import environments

    assert client.store is not None
    return environments(client.store, service)


def incident_list(client: Client, service: str | None, open_only: bool) -> list[dict[str, Any]]:
    """Incidents, newest first: `conveyor incidents` and `conveyor incident list` show them
    each in their own table."""
    if client.http:
        found: list[dict[str, Any]] = client.get(
            "/incidents", service=service, open="true" if open_only else None
        )
        return found
    from conveyor.views.delivery import list_incidents

    assert client.store is not None
    return list_incidents(client.store, service=service, open_only=open_only)


@click.command()
@click.argument("service", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def envs(service: str | None, as_json: bool) -> None:
    """What runs where: each environment's release, since when, healthy or not, and its queue."""
    client = Client()
    found = environment_list(client, service)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(_no_environments(client, service))
        return
    rows = []
    for e in found:
        health = {True: "healthy", False: "UNHEALTHY", None: "-"}[e["healthy"]]
        if e.get("checked_at"):
            health += f" (checked {when(e['checked_at'])})"
        if e["healthy"] is False and e.get("health_detail"):
            health += f": {e['health_detail']}"
        state = f"HELD by {e['held_by']}: {e['hold_reason']}" if e["held"] else health
        queue = ", ".join(f"#{q['deployment']} r{q['release']} {q['status']}" for q in e["queue"])
        rows.append(
            [
                e["service"],
                e["environment"],
                e["version"] or "-",
                when(e["since"]),
                state,
                e["url"] or "-",
                queue or "-",
            ]
        )
    print_table(["service", "environment", "release", "since", "state", "url", "queue"], rows)


def _no_environments(client: Client, service: str | None) -> str:
    """Why there is no environment to show: a first run still going makes them (once it
    succeeds), else the pipeline declares none."""
    going = [
        run
        for status in ("running", "queued")
        for run in client.backend.list_runs(service, status, 5)
    ]
    if going:
        first = min(run["id"] for run in going)
        return (
            f"no environments yet: run {first} is still going; its environments appear once it "
            f"succeeds (`conveyor logs -f {first}` follows it)"
        )
    return "no environments yet: add `environments:` to conveyor.yml"


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--env", "environment", help="Only this environment.")
@click.option("--release", type=int, help="Only this release.")
@click.option("-n", "--limit", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deployments(
    service: str | None, environment: str | None, release: int | None, limit: int, as_json: bool
) -> None:
    """List deployments, newest first."""
    client = Client()
    if client.http:
        found = client.get(
            "/deployments", service=service, environment=environment, release=release, limit=limit
        )
    else:
        from conveyor.views.delivery import list_deployments

        assert client.store is not None
        found = list_deployments(
            client.store, service=service, environment=environment, release=release, limit=limit
        )
    print_listing(
        found,
        as_json,
        [*_SHIPS, "kind", "status", "created", "reason"],
        lambda d: [
            *_ships(d),
            d["kind"],
            f"{MARK.get(d['status'], '…')} {d['status']}",
            when(d["created_at"]),
            (d["reason"] or "")[:80],
        ],
    )


@click.command()
@click.argument("deployment_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deployment(deployment_id: int, as_json: bool) -> None:
    """Show one deployment: checks, approvals and its log."""
    client = Client()
    if client.http:
        data = client.get(f"/deployments/{deployment_id}")
    else:
        from conveyor.views.delivery import deployment_detail

        assert client.store is not None
        data = deployment_detail(client.store, deployment_id)
    if as_json:
        print_json(data)
        return
    click.echo(
        f"deployment {data['id']} · {data['service']} {data['environment']} · "
        f"{data['version']} · {data['kind']} · {data['status']}"
    )
    if data["reason"]:
        click.echo(f"  reason: {data['reason']}")
    click.echo(f"  url:    {data['url'] or '-'}")
    for check in data["checks"]:
        click.echo(f"  {check['kind']}: {check['outcome']} — {check['detail']}")
    for approval in data["approvals"]:
        click.echo(
            f"  approval {approval['id']}: {approval['status']} ({approval['reason'] or ''})"
        )
    if data["log"]:
        click.echo("  deployment log:")
    for line in data["log"]:
        click.echo(f"  | {line}")
    output = data.get("output") or []
    if output:
        click.echo("  the app's output (last lines):")
    for line in output:
        click.echo(f"  > {line}")


@click.command()
@click.argument("release_id", type=int)
@click.argument("environment")
def promote(release_id: int, environment: str) -> None:
    """Queue RELEASE for ENVIRONMENT (its `after:`, holds and approvals still apply)."""
    client = Client()
    if client.http:
        dep = client.post(f"/releases/{release_id}/promote", {"environment": environment})["id"]
    else:
        from conveyor.engine.promotion import promote as queue

        assert client.store is not None
        dep = queue(client.store, release_id, environment, client.actor)
    click.echo(f"deployment {dep} queued: release {release_id} → {environment}")


@click.command()
@click.argument("environment")
@click.option("--to", "to", type=int, help="Release to restore (default: the previous one).")
@click.option("--service", help="Service (default: ./conveyor.yml's, or the only one).")
def rollback(environment: str, to: int | None, service: str | None) -> None:
    """Put ENVIRONMENT back on an earlier release that succeeded there."""
    client = Client()
    name = _service(client, service)
    if client.http:
        dep = client.post(f"/services/{name}/environments/{environment}/rollback", {"to": to})["id"]
    else:
        from conveyor.engine.promotion import rollback as queue

        assert client.store is not None
        dep = queue(client.store, name, environment, client.actor, to)
    click.echo(f"rollback queued as deployment {dep} ({name} {environment})")


@click.command()
@click.argument("environment")
@click.option("--reason", help="Why (shown to everyone waiting).")
@click.option("--service", help="Service (default: ./conveyor.yml's, or the only one).")
def hold(environment: str, reason: str | None, service: str | None) -> None:
    """Stop promotions into ENVIRONMENT until `conveyor unhold` (rollbacks still run)."""
    client = Client()
    name = _service(client, service)
    if client.http:
        client.post(f"/services/{name}/environments/{environment}/hold", {"reason": reason})
    else:
        from conveyor.engine.promotion import hold as do_hold

        assert client.store is not None
        do_hold(client.store, name, environment, client.actor, reason)
    click.echo(f"{name} {environment} is held")


@click.command()
@click.argument("environment")
@click.option("--service", help="Service (default: ./conveyor.yml's, or the only one).")
def unhold(environment: str, service: str | None) -> None:
    """Let promotions into ENVIRONMENT move again."""
    client = Client()
    name = _service(client, service)
    if client.http:
        client.post(f"/services/{name}/environments/{environment}/unhold")
    else:
        from conveyor.engine.promotion import unhold as do_unhold

        assert client.store is not None
        do_unhold(client.store, name, environment, client.actor)
    click.echo(f"{name} {environment} is no longer held")


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Decided ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def approvals(show_all: bool, as_json: bool) -> None:
    """Approvals waiting for a decision (or all of them)."""
    client = Client()
    if client.http:
        found = client.get("/approvals", all="true" if show_all else None)
    else:
        from conveyor.delivery.authorship import ChangeReader
        from conveyor.views.approval_context import add_contexts
        from conveyor.views.delivery import list_approvals

        assert client.store is not None
        found = list_approvals(client.store, pending_only=not show_all)
        add_contexts(client.store, found, ChangeReader(client.store))
    print_listing(
        found,
        as_json,
        [*_SHIPS, "status", "approvals", "approvers", "deadline"],
        lambda a: [
            *_ships(a),
            a["status"] if a["kind"] == "approval" else f"{a['status']} (inconclusive)",
            f"{a['approved']}/{a['required']}",
            ", ".join(a["approvers"]),
            when(a["deadline"]),
        ],
        empty="no approvals waiting" if not show_all else "no approvals yet",
    )
    if not as_json:
        for approval in found:
            if approval.get("context"):
                _print_context(approval)


# Commits listed under an approval; the count says how many more there are.
_SHOWN_COMMITS = 10


def _print_context(approval: Mapping[str, Any]) -> None:
    """What approving brings, under the table: what serves now, the commits and their authors,
    the checks on the way, the forge's diff."""
    c = approval["context"]
    click.echo(
        f"\napproval {approval['id']}: {approval['service']} {approval['version']} "
        f"to {approval['environment']}"
    )
    serving = c["serving"]
    click.echo(f"  serving now   {serving['version'] if serving else 'nothing yet'}")
    if c["problem"]:
        click.echo(f"  brings        ? the commits cannot be read: {c['problem']}")
    else:
        count = c["commit_count"]
        by = f" by {', '.join(c['authors'])}" if c["authors"] else ""
        since = f" since {c['base'][:7]}" if c["base"] else ""
        click.echo(f"  brings        {count} commit{'' if count == 1 else 's'}{by}{since}")
        for commit in c["commits"][:_SHOWN_COMMITS]:
            click.echo(
                f"                {commit['sha'][:7]} {commit['subject']} — {commit['author']}"
            )
        if count > _SHOWN_COMMITS:
            click.echo(f"                … and {count - _SHOWN_COMMITS} more")
    for where in c["checks"]:
        checks = ", ".join(f"{k['kind']} {k['outcome']}" for k in where["checks"]) or "no checks"
        click.echo(f"  {where['environment']:<13} {where['status']}: {checks}")
    if c["compare_url"]:
        click.echo(f"  diff          {c['compare_url']}")


def _decide(approval_id: int, decision: str, reason: str | None) -> None:
    client = Client()
    if client.http:
        data = client.post(f"/approvals/{approval_id}/{decision}", {"reason": reason})
        status = data["status"]
    else:
        from conveyor.delivery.authorship import ChangeReader
        from conveyor.engine.approvals import decide

        store = client.store
        assert store is not None
        status = decide(
            store,
            approval_id,
            client.actor,
            decision,
            reason,
            via="cli",
            change=ChangeReader(store),
        ).value
    done = {"approve": "approved", "reject": "rejected"}[decision]
    if status == done:
        click.echo(f"approval {approval_id}: {done}")
    elif status == "pending":
        noun = {"approve": "approval", "reject": "rejection"}[decision]
        click.echo(f"approval {approval_id}: your {noun} is recorded; it waits for more")
    else:
        click.echo(f"approval {approval_id}: {done}; it is now {status}")


@click.command()
@click.argument("approval_id", type=int)
@click.option("--reason", help="Why (kept in the audit log).")
def approve(approval_id: int, reason: str | None) -> None:
    """Approve a deployment (as CONVEYOR_USER, or the token's user with a server)."""
    _decide(approval_id, "approve", reason)


@click.command()
@click.argument("approval_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit log).")
def reject(approval_id: int, reason: str) -> None:
    """Reject a deployment: it will not happen."""
    _decide(approval_id, "reject", reason)


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--open", "open_only", is_flag=True, help="Only open incidents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def incidents(service: str | None, open_only: bool, as_json: bool) -> None:
    """Incidents: production failures, open and resolved."""
    print_listing(
        incident_list(Client(), service, open_only),
        as_json,
        ["id", "service", "environment", "status", "opened", "deployment", "title"],
        lambda i: [
            str(i["id"]),
            i["service"],
            i["environment"] or "-",
            i["status"],
            when(i["opened_at"]),
            str(i["deployment"] or "-"),
            i["title"][:90],
        ],
        empty="no incidents",
    )


@click.command()
@click.option("--service", help="Only this service.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(service: str | None, limit: int, as_json: bool) -> None:
    """The audit log: approvals, holds, promotions, rollbacks, incidents, tokens, users."""
    client = Client()
    if client.http:
        found = client.get("/audit", service=service, limit=limit)
    else:
        from conveyor.views.delivery import audit_log

        assert client.store is not None
        found = audit_log(client.store, service=service, limit=limit)
    if as_json:
        print_json(found)
        return
    print_table(
        ["at", "event", "service", "actor", "details"],
        [
            [
                when(e["at"]),
                e["type"],
                e["service"] or "-",
                e["actor"] or "-",
                ", ".join(f"{k}={v}" for k, v in e["data"].items() if v is not None)[:100],
            ]
            for e in found
        ],
    )


@click.group()
def user() -> None:
    """People who approve: names, emails, groups, Slack ids."""


@user.command("add")
@click.argument("name")
@click.option("--email", "emails", multiple=True, help="An email (repeatable).")
@click.option("--group", "groups", multiple=True, help="A group (repeatable).")
@click.option("--slack", "slack_id", help="Their Slack user id (for Slack approvals).")
@click.option(
    "--password",
    "with_password",
    is_flag=True,
    help="Ask for a password to sign in to the web UI with (never given on the command line).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="What they may do in the web UI: read, trigger, approve, admin (repeatable or "
    "comma-separated; default read).",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    help="Their web UI scopes act on this service only (repeatable; default: every service).",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    help="Their web UI scopes act in this environment only (repeatable).",
)
def user_add(
    name: str,
    emails: tuple[str, ...],
    groups: tuple[str, ...],
    slack_id: str | None,
    with_password: bool,
    scopes: tuple[str, ...],
    services: tuple[str, ...],
    environments: tuple[str, ...],
) -> None:
    """Add or update a user."""
    from conveyor.engine.credentials import check_names, check_new_password, parse_scopes

    chosen = parse_scopes(scopes) if scopes else None
    limits = {
        key: check_names(key[:-1], [n for v in values for n in v.split(",")])
        for key, values in (("services", services), ("environments", environments))
        if values
    }
    password = _ask_password(check_new_password) if with_password else None
    client = Client()
    if client.http:
        client.post(
            "/users",
            {"name": name, "emails": list(emails), "groups": list(groups), "slack_id": slack_id},
        )
    else:
        from conveyor.engine.approvals import add_user

        assert client.store is not None
        add_user(client.store, name, list(emails), list(groups), slack_id, client.actor)
    if password is not None or chosen is not None or limits:
        _set_credentials(client, name, password, chosen, limits)
    click.echo(f"user {name} saved")


@user.command("passwd")
@click.argument("name")
def user_passwd(name: str) -> None:
    """Set a user's web UI password (asked for; ends their signed-in sessions)."""
    from conveyor.engine.credentials import check_new_password

    password = _ask_password(check_new_password)
    _set_credentials(Client(), name, password, None)
    click.echo(f"password of {name} changed")


def _ask_password(check: Any) -> str:
    """Prompt twice without echo; stdin when it is not a terminal (scripts, tests)."""
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    check(password)
    return password


def _set_credentials(
    client: Client,
    name: str,
    password: str | None,
    scopes: list[str] | None,
    limits: dict[str, list[str]] | None = None,
) -> None:
    body: dict[str, Any] = dict(limits or {})
    if password is not None:
        body["password"] = password
    if scopes is not None:
        body["scopes"] = scopes
    if client.http:
        client.http._call("PUT", f"/users/{name}/credentials", json=body)
        return
    from conveyor.engine.credentials import set_credentials

    assert client.store is not None
    set_credentials(
        client.store,
        name,
        password=password,
        scopes=scopes,
        services=body.get("services"),
        environments=body.get("environments"),
        by=client.actor,
    )


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def user_list(as_json: bool) -> None:
    """List users (from the server and the users file)."""
    client = Client()
    if client.http:
        found = client.get("/users")
    else:
        from conveyor.engine.approvals import people

        assert client.store is not None
        found = [
            {
                "name": p.name,
                "emails": list(p.emails),
                "groups": list(p.groups),
                "slack_id": p.slack_id,
            }
            for p in people(client.store).values()
        ]
    if as_json:
        print_json(found)
        return
    print_table(
        ["name", "emails", "groups", "slack"],
        [
            [u["name"], ", ".join(u["emails"]), ", ".join(u["groups"]), u["slack_id"] or "-"]
            for u in found
        ],
    )
