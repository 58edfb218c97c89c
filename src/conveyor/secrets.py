"""Secrets: `${{ secrets.NAME }}` in the pipeline file, resolved for one job or deployment.

A job gets the secrets its own `env` references, looked up for its service; a deployment, those
its environment's `env` references, looked up for its service and environment (store.vault).
Nothing else is ever resolvable: not another service's secrets, and not the environment of the
server or runner, which holds their own settings (decision 0011). The built-in runner and the
delivery controller resolve from the store (conveyor.store.vault); a runner agent gets its job's
resolved secrets with the lease. Every resolved value is masked in the job's logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.plan import JobPlan

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingSecret(ConveyorError):
    pass


def read_secrets_file(path: Path) -> dict[str, str]:
    """NAME=value lines (the secrets file of earlier versions, for `conveyor secret import`)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConveyorError(f"there is no file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConveyorError(f"cannot read the secrets file {path}: {exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConveyorError(f"{path}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def referenced(texts: Iterable[str]) -> set[str]:
    return {name for text in texts for name in SECRET_REF.findall(text)}


def plan_references(plan: JobPlan) -> set[str]:
    """The names a job's env (its own and its steps') references: all it may resolve."""
    return referenced([*plan.env.values(), *(v for s in plan.steps for v in s.env.values())])


class Secrets:
    """The secrets one job or deployment may use, already resolved; asking for any other
    fails naming the secret and its service."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        service: str | None = None,
        environment: str | None = None,
        failure: ConveyorError | None = None,
    ) -> None:
        self._values = dict(values or {})
        self.service = service
        self.environment = environment
        # Why nothing could be resolved (e.g. the key file is missing): raised at first use.
        self.failure = failure
        self.used: dict[str, str] = {}

    def get(self, name: str) -> str:
        if self.failure is not None:
            raise type(self.failure)(self.failure.message, hint=self.failure.hint)
        if name not in self._values:
            raise _missing(name, self.service, self.environment)
        self.used[name] = self._values[name]
        return self._values[name]

    def substitute(self, text: str) -> str:
        return SECRET_REF.sub(lambda m: self.get(m.group(1)), text)

    def all_values(self) -> list[str]:
        """Every value worth masking: all this job was given."""
        return list(self._values.values())

    def names(self) -> set[str]:
        return set(self._values)

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> Secrets:
        """On a runner agent: what the server resolved for the leased job (lease_secrets)."""
        service = str((lease.get("context") or {}).get("service") or "") or None
        error = lease.get("secrets_error")
        failure = (
            ConveyorError(str(error.get("message")), hint=error.get("hint"))
            if isinstance(error, dict)
            else None
        )
        given = lease.get("secrets")
        values = {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
        return cls(values, service=service, failure=failure)


def _missing(name: str, service: str | None, environment: str | None) -> MissingSecret:
    where = f" for service {service}" if service else ""
    where += f" in {environment}" if environment else ""
    if name.startswith("CONVEYOR_"):
        hint = "CONVEYOR_* names are the server's and runners' own settings, never a pipeline's"
    elif service:
        option = f" --environment {environment}" if environment else ""
        hint = f"set it with `conveyor secret set {service}{option} {name}`"
    else:
        hint = "set it with `conveyor secret set SERVICE NAME`"
    return MissingSecret(f"secret {name} is not set{where}", hint=hint)
