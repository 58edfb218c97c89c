"""Pipeline secrets in the store: set, list (names only), remove, import, and resolve for one
service (and environment). Values are sealed with the key file (store.sealing); so are the
services' webhook secrets.

A secret belongs to a service, for all its environments or for one; an environment's secret
wins over the service-wide one of the same name. Names starting with CONVEYOR_ are refused:
they are the server's own settings, and a pipeline never resolves them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select

from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType
from conveyor.plan import JobPlan
from conveyor.secrets import Secrets, plan_references
from conveyor.spec.fields import ENV_VAR_PATTERN, NAME_PATTERN, SERVICE_PATTERN
from conveyor.store.db import Store
from conveyor.store.models import Secret, Service, utcnow
from conveyor.store.sealing import (
    PREFIX,
    Key,
    SecretsKeyError,
    is_sealed,
    key_path,
    missing_key,
    sealed_key_id,
)

MAX_VALUE_CHARS = 65_536
RESERVED_PREFIX = "CONVEYOR_"


# --- names -------------------------------------------------------------------------------------


def check_scope(service: str, environment: str | None) -> None:
    if len(service) > 200 or not re.match(SERVICE_PATTERN, service):
        raise ConveyorError(
            f"{service!r} is not a service name",
            hint="lowercase letters, digits, '.', '_' and '-', as `service:` in conveyor.yml",
        )
    if environment is not None and (
        len(environment) > 200 or not re.match(NAME_PATTERN, environment)
    ):
        raise ConveyorError(
            f"{environment!r} is not an environment name",
            hint="letters, digits, '.', '_' and '-', as under `environments:` in conveyor.yml",
        )


def check_name(name: str) -> None:
    if len(name) > 200 or not re.match(ENV_VAR_PATTERN, name):
        raise ConveyorError(
            f"{name!r} is not a secret name",
            hint="letters, digits and '_', not starting with a digit: ${{ secrets.NAME }}",
        )
    if name.startswith(RESERVED_PREFIX):
        raise ConveyorError(
            f"secret names starting with {RESERVED_PREFIX} are refused ({name})",
            hint="CONVEYOR_* names are the server's own settings, never a pipeline's",
        )


def check_value(name: str, value: str) -> None:
    if not value:
        raise ConveyorError(f"the value of secret {name} is empty")
    if len(value) > MAX_VALUE_CHARS:
        raise ConveyorError(
            f"the value of secret {name} is longer than {MAX_VALUE_CHARS} characters"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may carry a lone surrogate ("\ud800"), which no process environment can hold.
        raise ConveyorError(f"the value of secret {name} is not valid text") from None


def scope_text(service: str, environment: str | None) -> str:
    return f"service {service}" + (f" in {environment}" if environment else "")


# --- the key -----------------------------------------------------------------------------------


def _a_sealed_value(store: Store) -> str | None:
    """Some sealed value of the store, or None if it holds none."""
    with store.session() as session:
        return session.scalar(select(Secret.value).limit(1)) or session.scalar(
            select(Service.webhook_secret).where(Service.webhook_secret.like(f"{PREFIX}%")).limit(1)
        )


def key_for(store: Store, *, write: bool = False) -> Key:
    """The key of this store's secrets. To `write`, a new one is made while the store holds
    nothing sealed, and a key other than the one of what is sealed is refused: a lost key must
    be reported, not quietly replaced by one that opens nothing, nor mixed with it."""
    path = key_path(store.home, store.settings.secrets_key_file)
    key = Key.load(path)
    sealed = _a_sealed_value(store) if write or key is None else None
    if key is not None:
        if sealed is not None and sealed_key_id(sealed) != key.id:
            key.unseal(sealed, "stored secret")  # raises, naming both keys
        return key
    if sealed is not None:
        raise missing_key(path, sealed_key_id(sealed))
    if not write:
        raise SecretsKeyError(f"the secrets key file {path} is missing")
    return Key.create(path)


# --- pipeline secrets --------------------------------------------------------------------------


def set_secret(
    store: Store,
    service: str,
    name: str,
    value: str,
    environment: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    return import_secrets(store, service, {name: value}, environment, by)[0]


def import_secrets(
    store: Store,
    service: str,
    values: Mapping[str, str],
    environment: str | None = None,
    by: str | None = None,
) -> list[dict[str, Any]]:
    """Set every secret of `values` in one transaction: all of them, or none."""
    check_scope(service, environment)
    return _seal_and_store(store, service, values, environment, by, {"service": service})


def _seal_and_store(
    store: Store,
    scope: str,
    values: Mapping[str, str],
    environment: str | None,
    by: str | None,
    event: dict[str, Any],
) -> list[dict[str, Any]]:
    """Seal and store every secret of `values` under `scope` (a service, or a connector's
    scope), in one transaction; ``event`` names the scope in the secret.set events."""
    for name, value in values.items():
        check_name(name)
        check_value(name, value)
    if not values:
        raise ConveyorError("there is no secret to set")
    key = key_for(store, write=True)
    now, done = utcnow(), []
    with store.write() as w:
        for name, value in values.items():
            row = w.session.scalar(
                select(Secret).where(
                    Secret.service == scope,
                    Secret.environment == (environment or ""),
                    Secret.name == name,
                )
            )
            created = row is None
            if row is None:
                row = Secret(
                    service=scope, environment=environment or "", name=name, created_at=now
                )
                w.session.add(row)
            row.value, row.updated_at, row.updated_by = key.seal(value), now, by
            w.emit(EventType.SECRET_SET, **event, environment=environment, name=name, actor=by)
            done.append(_listed(row) | {"created": created})
    return done


def _listed(row: Secret) -> dict[str, Any]:
    return {
        "service": row.service,
        "environment": row.environment or None,
        "name": row.name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    }


def list_secrets(
    store: Store, service: str, environment: str | None = None
) -> list[dict[str, Any]]:
    """Names, scopes and times of a service's secrets (all of them, or one environment's);
    never a value."""
    check_scope(service, environment)
    query = select(Secret).where(Secret.service == service)
    if environment is not None:
        query = query.where(Secret.environment == environment)
    with store.session() as session:
        rows = session.scalars(query.order_by(Secret.environment, Secret.name)).all()
        return [_listed(r) for r in rows]


def remove_secret(
    store: Store, service: str, name: str, environment: str | None = None, by: str | None = None
) -> None:
    check_scope(service, environment)
    with store.write() as w:
        row = w.session.scalar(
            select(Secret).where(
                Secret.service == service,
                Secret.environment == (environment or ""),
                Secret.name == name,
            )
        )
        if row is None:
            raise NotFound(
                f"there is no secret {name} for {scope_text(service, environment)}",
                hint=f"`conveyor secret list {service}` shows its secrets",
            )
        w.session.delete(row)
        w.emit(
            EventType.SECRET_REMOVED, service=service, environment=environment, name=name, actor=by
        )


def resolve(
    store: Store, service: str, names: Iterable[str], environment: str | None = None
) -> dict[str, str]:
    """The values of `names` a job or deployment of `service` (in `environment`) may have:
    the environment's own, else the service-wide ones. Names not set are left out."""
    wanted = sorted({n for n in names if not n.startswith(RESERVED_PREFIX)})
    if not wanted:
        return {}
    scopes = ["", environment] if environment else [""]
    with store.session() as session:
        rows = session.execute(
            select(Secret.environment, Secret.name, Secret.value).where(
                Secret.service == service,
                Secret.name.in_(wanted),
                Secret.environment.in_(scopes),
            )
        ).all()
    if not rows:
        return {}
    key = key_for(store)
    values: dict[str, str] = {}
    # Service-wide first, so that an environment's own value replaces it.
    for env, name, sealed in sorted(rows, key=lambda r: r[0] != ""):
        values[name] = key.unseal(sealed, f"secret {name} of {scope_text(service, env)}")
    return values


# --- connectors' tokens ----------------------------------------------------------------------

# A connector's secrets are stored under the scope "connector:<name>": no service name can hold
# a ':' (SERVICE_PATTERN), so no pipeline resolves them, and the service commands and routes
# (check_scope) cannot name them; only the connector's own sync reads them back.
CONNECTOR_SCOPE = "connector:"


def set_connector_secret(
    store: Store, connector: str, name: str, value: str, by: str | None = None
) -> dict[str, Any]:
    """Store the token `name` that connector `connector` reads (sealed, like every secret)."""
    done = _seal_and_store(
        store, CONNECTOR_SCOPE + connector, {name: value}, None, by, {"connector": connector}
    )[0]
    return done | {"service": None, "connector": connector}


def connector_secret(store: Store, connector: str, name: str) -> str | None:
    """The clear value of connector `connector`'s secret `name`; None if it is not set."""
    with store.session() as session:
        sealed = session.scalar(
            select(Secret.value).where(
                Secret.service == CONNECTOR_SCOPE + connector,
                Secret.environment == "",
                Secret.name == name,
            )
        )
    if sealed is None:
        return None
    return key_for(store).unseal(sealed, f"secret {name} of connector {connector}")


def connector_secret_names(store: Store, connector: str) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(
                select(Secret.name)
                .where(Secret.service == CONNECTOR_SCOPE + connector)
                .order_by(Secret.name)
            )
        )


# --- webhook secrets ---------------------------------------------------------------------------


def seal_webhook_secret(store: Store, value: str) -> str:
    return key_for(store, write=True).seal(value)


def open_webhook_secret(store: Store, stored: str | None, service: str) -> str | None:
    """The clear webhook secret; one stored by an older version before its server's first
    start with this one is still in clear, and used as it is."""
    if stored is None or not is_sealed(stored):
        return stored
    return key_for(store).unseal(stored, f"webhook secret of service {service}")


def seal_plaintext_webhook_secrets(store: Store) -> int:
    with store.session() as session:
        if not session.scalar(
            select(
                exists().where(
                    Service.webhook_secret.is_not(None),
                    Service.webhook_secret.not_like(f"{PREFIX}%"),
                )
            )
        ):
            return 0
    key = key_for(store, write=True)
    sealed = 0
    with store.write() as w:
        for svc in w.session.scalars(
            select(Service).where(
                Service.webhook_secret.is_not(None),
                Service.webhook_secret.not_like(f"{PREFIX}%"),
            )
        ):
            assert svc.webhook_secret is not None
            svc.webhook_secret = key.seal(svc.webhook_secret)
            sealed += 1
    return sealed


# --- start-up ----------------------------------------------------------------------------------


def legacy_file(home: Path, configured: Path | None = None) -> Path | None:
    """The secrets file of earlier versions, if one is still there (it is no longer read):
    ``configured`` (CONVEYOR_SECRETS_FILE), else secrets.env in the data directory."""
    path = configured or home / "secrets.env"
    return path if path.is_file() else None


def legacy_warning(path: Path) -> str:
    return (
        f"{path} is no longer read: each service now has its own secrets in the store. "
        f"Import the ones a service needs with `conveyor secret import SERVICE {path}` "
        "(add --environment ENV for one environment's), then delete the file"
    )


def on_server_start(store: Store, secrets_file: Path | None, log: logging.Logger) -> None:
    """Seal webhook secrets left in clear, check the key against what is sealed, and name the
    old secrets file if it is still there. Problems are logged, never fatal: everything that
    needs no secret keeps working, and each use of a secret reports the problem again."""
    legacy = legacy_file(store.home, secrets_file)
    if legacy is not None:
        log.warning("%s", legacy_warning(legacy))
    try:
        sealed = seal_plaintext_webhook_secrets(store)
        if sealed:
            log.info("sealed %d webhook secret(s) stored in clear by an earlier version", sealed)
        sample = _a_sealed_value(store)
        if sample is not None:
            key_for(store).unseal(sample, "stored secret")
    except ConveyorError as exc:
        log.error("secrets: %s (%s)", exc.message, exc.hint or "")


# --- what one job or deployment gets (conveyor.secrets) ---------------------------------------


def scoped(
    store: Store, service: str, names: Iterable[str], environment: str | None = None
) -> Secrets:
    """The secrets `names` of `service` (in `environment`) from the store; a problem with the
    key is kept and raised when a secret is asked for, so that it fails that job alone."""
    wanted = set(names)
    try:
        values = resolve(store, service, wanted, environment) if wanted else {}
    except ConveyorError as exc:
        return Secrets(service=service, environment=environment, failure=exc)
    return Secrets(values, service=service, environment=environment)


def for_job(store: Store, service: str, plan: JobPlan) -> Secrets:
    return scoped(store, service, plan_references(plan))


def lease_secrets(store: Store, service: str, plan: JobPlan) -> dict[str, Any]:
    """What a lease carries to a runner agent: the job's resolved secrets (the runner protocol
    is authenticated by the runner token, and the server should sit behind TLS)."""
    secrets = for_job(store, service, plan)
    if secrets.failure is not None:
        return {
            "secrets": {},
            "secrets_error": {"message": secrets.failure.message, "hint": secrets.failure.hint},
        }
    return {"secrets": {name: secrets.get(name) for name in sorted(secrets.names())}}
