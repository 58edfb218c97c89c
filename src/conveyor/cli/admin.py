"""`conveyor token` and `conveyor service`: who may call the API, and what it builds."""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

import click

from conveyor.cli.backend import remote
from conveyor.cli.common import (
    actor,
    interactive_input,
    local_only,
    plural,
    print_json,
    print_table,
    store_for,
    when,
)
from conveyor.errors import ConveyorError

# The store and the tokens' code are imported by the commands that work on the store: `service`
# commands that ask a server start without them. So the scopes are spelled here, for --help
# (server.tokens.SCOPES; tests/cli/test_cli_startup.py keeps them equal).
SCOPES_HELP = "Comma-separated: read, trigger, approve, admin, runner."


@click.group()
def token() -> None:
    """API tokens: create, list, revoke (stored hashed; shown once)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "--scopes",
    "scopes",
    default="read",
    show_default=True,
    help=SCOPES_HELP,
)
@click.option("--user", help="The person this token acts for (used for approvals).")
@click.option(
    "--service",
    "services",
    multiple=True,
    help="Act on this service only (repeatable; default: every service). Reads stay global.",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    help="Promote, roll back, hold and approve in this environment only (repeatable).",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Runner tokens: the only labels its runners may claim (repeatable).",
)
def token_create(
    name: str,
    scopes: str,
    user: str | None,
    services: tuple[str, ...],
    environments: tuple[str, ...],
    labels: tuple[str, ...],
) -> None:
    """Create a token and print it (the only time it is shown). Works on the local store (the
    server's data directory): refused while CONVEYOR_URL is set."""
    from conveyor.server.tokens import create_token

    local_only("token create", _TOKENS_ON_THE_SERVER)
    value = create_token(
        store_for(),
        name,
        [s.strip() for s in scopes.split(",") if s.strip()],
        user,
        services=_split(services),
        environments=_split(environments),
        labels=_split(labels),
    )
    click.echo(value)
    click.echo(f"token {name!r} created; store it now, it is not shown again", err=True)


# Tokens are made where the server's data is: a token cannot mint others through the API.
_TOKENS_ON_THE_SERVER = (
    "tokens are kept in the server's data directory: run `conveyor token ...` there "
    "(with its CONVEYOR_HOME), then give the token to this machine as CONVEYOR_TOKEN"
)


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated and/or comma-separated values."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _limits(t: dict[str, Any]) -> str:
    parts = [
        f"{key}={','.join(t[key])}" for key in ("services", "environments", "labels") if t[key]
    ]
    return " ".join(parts) or "-"


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """List tokens (names, scopes, prefixes; never the tokens). Local store only."""
    from conveyor.server.tokens import list_tokens

    local_only("token list", _TOKENS_ON_THE_SERVER)
    tokens = list_tokens(store_for())
    if as_json:
        print_json(tokens)
        return
    print_table(
        ["name", "prefix", "scopes", "limited to", "user", "created", "revoked"],
        [
            [
                t["name"],
                t["prefix"] + "…",
                ",".join(t["scopes"]),
                _limits(t),
                t["user"] or "-",
                when(t["created_at"]),
                when(t["revoked_at"]),
            ]
            for t in tokens
        ],
    )


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke a token: it stops working at once. Local store only."""
    from conveyor.server.tokens import revoke_token

    local_only("token revoke", _TOKENS_ON_THE_SERVER)
    revoke_token(store_for(), name)
    click.echo(f"token {name!r} revoked")


@click.group()
def service() -> None:
    """Services the server builds: register, list, remove."""


@service.command("add")
@click.argument("name")
@click.option("--repo", "repository", required=True, help="A local path, or a git URL to mirror.")
@click.option("--webhook-secret", is_flag=True, help="Generate a secret for signed webhooks.")
@click.option("--allow-unsigned", is_flag=True, help="Accept webhooks without a signature.")
@click.option("--poll", "poll_interval", type=float, help="Poll the repository every N seconds.")
def service_add(
    name: str,
    repository: str,
    webhook_secret: bool,
    allow_unsigned: bool,
    poll_interval: float | None,
) -> None:
    """Register (or update) a service and where its repository is. With CONVEYOR_URL, on that
    server (a local path is then a path on the server's machine)."""
    from pathlib import Path

    from conveyor.sources.mirror import checked_repository, is_local

    server = remote()
    if server is not None:
        if is_local(repository) and not Path(repository).expanduser().is_absolute():
            raise ConveyorError(
                f"{repository} is a relative path, and the server would read it from its own "
                "working directory",
                hint="give the repository's absolute path on the server's machine, or a git URL",
            )
        saved = server._call(
            "POST",
            "/services",
            json={
                "name": name,
                "repository": repository,
                "generate_webhook_secret": webhook_secret,
                "allow_unsigned": allow_unsigned,
                "poll_interval": poll_interval,
            },
        )
        _registered(saved["name"], saved["repository"], saved.get("webhook_secret"))
        return
    from sqlalchemy import select

    from conveyor.events import EventType
    from conveyor.store.models import Service, utcnow
    from conveyor.store.vault import seal_webhook_secret

    repository = checked_repository(repository)
    secret = pysecrets.token_urlsafe(32) if webhook_secret else None
    store = store_for()
    # Sealed before the transaction: making the key file may need to read the store.
    sealed = seal_webhook_secret(store, secret) if secret else None
    with store.write() as w:
        svc = w.session.scalar(select(Service).where(Service.name == name))
        if svc is None:
            svc = Service(name=name, repository=repository, created_at=utcnow())
            w.session.add(svc)
        svc.repository = repository
        svc.allow_unsigned = allow_unsigned
        svc.poll_interval = poll_interval
        if sealed:
            svc.webhook_secret = sealed
        w.emit(EventType.SERVICE_REGISTERED, service=name, repository=repository, by="cli")
    _registered(name, repository, secret)


def _registered(name: str, repository: str, secret: str | None) -> None:
    click.echo(f"service {name} -> {repository}")
    if secret:
        click.echo(f"webhook secret (shown once): {secret}")


@service.command("list")
@click.option("--json", "as_json", is_flag=True)
def service_list(as_json: bool) -> None:
    """List registered services (on the server when CONVEYOR_URL is set)."""
    server = remote()
    rows: list[dict[str, Any]] = (
        server._call("GET", "/services") if server is not None else _local_services()
    )
    if as_json:
        print_json(rows)
        return
    print_table(
        ["service", "repository", "webhooks", "poll"],
        [
            [
                r["name"],
                r["repository"],
                "signed" if r["signed_webhooks"] else "-",
                f"{r['poll_interval']:g}s" if r["poll_interval"] else "-",
            ]
            for r in rows
        ],
    )


def _local_services() -> list[dict[str, Any]]:
    from sqlalchemy import select

    from conveyor.store.models import Service

    with store_for().session() as session:
        return [
            {
                "name": s.name,
                "repository": s.repository,
                "signed_webhooks": s.webhook_secret is not None,
                "poll_interval": s.poll_interval,
            }
            for s in session.scalars(select(Service).order_by(Service.name))
        ]


@service.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def service_remove(name: str, yes: bool) -> None:
    """Remove a service and what was built from it: runs with their logs and artifacts,
    releases, deployments, environments, incidents and secrets. The audit log and the DORA
    history stay. Refused while a run or deployment of it is in progress. With CONVEYOR_URL,
    on that server."""
    server = remote()
    if server is not None:
        plan = server._call("DELETE", f"/services/{name}", params={"dry_run": "true"})
    else:
        from conveyor.store.service_removal import what_removal_takes

        with store_for().session() as session:
            plan = {"removed": False, **vars(what_removal_takes(session, name))}
    if plan["in_progress"]:
        raise ConveyorError(
            f"service {name} has work in progress: {', '.join(plan['in_progress'])}",
            hint="wait for it to end, or cancel it (`conveyor cancel RUN`), then remove it",
        )
    click.echo(f"removing service {name} ({plan['repository']}) removes:")
    click.echo(
        "  "
        + ", ".join(
            plural(plan[key], word)
            for key, word in (
                ("runs", "run"),
                ("releases", "release"),
                ("deployments", "deployment"),
                ("environments", "environment"),
                ("incidents", "incident"),
                ("secrets", "secret"),
            )
        )
        + " (runs with their logs and artifacts)"
    )
    click.echo(
        "  kept: the audit log and the DORA history; apps it deployed keep running until "
        "stopped, and its files stay in the data directory"
    )
    if not yes:
        if not interactive_input():
            raise ConveyorError(
                "not removed: confirm with --yes (no terminal to ask on)",
                hint=f"conveyor service remove {name} --yes",
            )
        click.confirm(f"Remove service {name}?", abort=True)
    if server is not None:
        server._call("DELETE", f"/services/{name}")
    else:
        from conveyor.store.service_removal import remove_service

        remove_service(store_for(), name, by=actor())
    click.echo(f"service {name} removed")
