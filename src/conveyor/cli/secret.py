"""`conveyor secret`: the pipeline secrets of a service (and of one of its environments).

Embedded against the data directory, or through a server when CONVEYOR_URL is set (an admin
token). A value is read from stdin, a file or a prompt that does not echo, never from the
command line, where `ps` and the shell's history would keep it; nothing ever prints one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from conveyor.cli.common import print_json, print_table, when
from conveyor.errors import ConveyorError

ENVIRONMENT = click.option(
    "-e",
    "--environment",
    default=None,
    help="One environment's secret (wins over the service-wide one); default: every environment.",
)


class _Secrets:
    """The same calls against the local store or a server."""

    def __init__(self) -> None:
        from conveyor.cli.common import settings

        given = settings()
        if given.url:
            from conveyor.cli.backend import HttpBackend

            self.http: Any = HttpBackend(given.url, given.token)
            self.store: Any = None
        else:
            from conveyor.cli.common import store_for

            self.http, self.store = None, store_for(recover=False)

    @staticmethod
    def _path(service: str, name: str | None = None) -> str:
        from conveyor.store.vault import check_name, check_scope

        # Checked here too: the names become part of the URL.
        check_scope(service, None)
        if name is None:
            return f"/services/{service}/secrets"
        check_name(name)
        return f"/services/{service}/secrets/{name}"

    @staticmethod
    def _params(environment: str | None) -> dict[str, str]:
        return {"environment": environment} if environment else {}

    def set_many(
        self, service: str, values: dict[str, str], environment: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        if self.http is not None:
            for name in values:
                self._path(service, name)
            answer = self.http._call(
                "PUT",
                self._path(service),
                params=self._params(environment),
                json={"values": values},
            )
            return answer["secrets"], bool(answer["registered"])
        from sqlalchemy import select

        from conveyor.store import vault
        from conveyor.store.models import Service

        done = vault.import_secrets(self.store, service, values, environment, _actor())
        with self.store.session() as session:
            known = session.scalar(select(Service.id).where(Service.name == service))
        return done, known is not None

    def list(self, service: str, environment: str | None) -> list[dict[str, Any]]:
        if self.http is not None:
            import datetime as dt

            found: list[dict[str, Any]] = self.http._call(
                "GET", self._path(service), params=self._params(environment)
            )
            for s in found:
                s["updated_at"] = dt.datetime.fromisoformat(s["updated_at"])
            return found
        from conveyor.store import vault

        return vault.list_secrets(self.store, service, environment)

    def remove(self, service: str, name: str, environment: str | None) -> None:
        if self.http is not None:
            self.http._call("DELETE", self._path(service, name), params=self._params(environment))
            return
        from conveyor.store import vault

        vault.remove_secret(self.store, service, name, environment, _actor())


def _actor() -> str:
    from conveyor.cli.common import actor

    return actor()


def _scope(service: str, environment: str | None) -> str:
    return f"service {service}" + (f" in {environment}" if environment else "")


def read_value(name: str, value_file: Path | None) -> str:
    if value_file is not None:
        try:
            # As it is: a key file may need its last newline.
            return value_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConveyorError(f"cannot read {value_file}: {exc}") from None
    if not sys.stdin.isatty():
        # `echo value | conveyor secret set ...`: echo's newline is not part of the value.
        text = sys.stdin.read()
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    value: str = click.prompt(
        f"value of {name}", hide_input=True, confirmation_prompt=True, err=True
    )
    return value


def _unregistered(service: str, known: bool) -> None:
    if not known:
        click.echo(
            f"note: Conveyor knows no service named {service} yet (a typo?); "
            "the secret waits for it",
            err=True,
        )


@click.group()
def secret() -> None:
    """Pipeline secrets of a service: set, list, rm, import (values are never shown).

    A job gets the secrets its env references as ${{ secrets.NAME }}, of its own service only;
    a deployment also gets those of its environment, which win over the service-wide ones."""


@secret.command("set")
@click.argument("service")
@click.argument("name")
@ENVIRONMENT
@click.option(
    "--value-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the value from this file, as it is (default: stdin, or a prompt).",
)
def secret_set(service: str, name: str, environment: str | None, value_file: Path | None) -> None:
    """Set secret NAME of SERVICE: the value comes from stdin (one trailing newline dropped),
    --value-file, or a prompt that does not echo."""
    from conveyor.store.vault import check_name, check_scope

    check_scope(service, environment)
    check_name(name)  # before asking for a value that could not be kept
    value = read_value(name, value_file)
    [done], known = _Secrets().set_many(service, {name: value}, environment)
    how = "set" if done["created"] else "updated"
    click.echo(f"secret {name} {how} for {_scope(service, environment)}")
    _unregistered(service, known)


@secret.command("list")
@click.argument("service")
@ENVIRONMENT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def secret_list(service: str, environment: str | None, as_json: bool) -> None:
    """Names, scopes and when each was last set; never the values."""
    found = _Secrets().list(service, environment)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(f"no secrets for {_scope(service, environment)}")
        return
    print_table(
        ["name", "scope", "updated", "by"],
        [
            [
                s["name"],
                s["environment"] or "all environments",
                when(s["updated_at"]),
                s["updated_by"] or "-",
            ]
            for s in found
        ],
    )


@secret.command("rm")
@click.argument("service")
@click.argument("name")
@ENVIRONMENT
def secret_rm(service: str, name: str, environment: str | None) -> None:
    """Remove secret NAME of SERVICE (or of one of its environments)."""
    _Secrets().remove(service, name, environment)
    click.echo(f"secret {name} removed from {_scope(service, environment)}")


@secret.command("import")
@click.argument("service")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@ENVIRONMENT
def secret_import(service: str, file: Path, environment: str | None) -> None:
    """Set every NAME=value line of FILE (e.g. the secrets.env of earlier versions) as a
    secret of SERVICE: all of them, or none."""
    from conveyor.secrets import read_secrets_file

    values = read_secrets_file(file)
    if not values:
        raise ConveyorError(f"{file} has no NAME=value line")
    done, known = _Secrets().set_many(service, values, environment)
    names = ", ".join(d["name"] for d in done)
    click.echo(f"imported {len(done)} secret(s) into {_scope(service, environment)}: {names}")
    _unregistered(service, known)
