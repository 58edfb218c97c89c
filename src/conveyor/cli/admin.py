"""`conveyor token` and `conveyor service`: who may call the API, and what it builds."""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

import click
from sqlalchemy import select

from conveyor.cli.common import print_json, print_table, store_for, when
from conveyor.events import EventType
from conveyor.server.tokens import SCOPES, create_token, list_tokens, revoke_token
from conveyor.store.models import Service, utcnow
from conveyor.store.vault import seal_webhook_secret


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
    help=f"Comma-separated: {', '.join(SCOPES)}.",
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
    """Create a token and print it (the only time it is shown)."""
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
    """List tokens (names, scopes, prefixes; never the tokens)."""
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
    """Revoke a token: it stops working at once."""
    revoke_token(store_for(), name)
    click.echo(f"token {name!r} revoked")


@click.group()
def service() -> None:
    """Services the server builds: register, list."""


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
    """Register (or update) a service and where its repository is."""
    from pathlib import Path

    from conveyor.sources.mirror import is_local

    if is_local(repository):
        repository = str(Path(repository).resolve())
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
    click.echo(f"service {name} -> {repository}")
    if secret:
        click.echo(f"webhook secret (shown once): {secret}")


@service.command("list")
@click.option("--json", "as_json", is_flag=True)
def service_list(as_json: bool) -> None:
    """List registered services."""
    with store_for().session() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": s.name,
                "repository": s.repository,
                "signed_webhooks": s.webhook_secret is not None,
                "poll_interval": s.poll_interval,
            }
            for s in session.scalars(select(Service).order_by(Service.name))
        ]
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
