"""Secrets: `${{ secrets.NAME }}` in the pipeline file, resolved only on the runner.

A secret comes from the secrets file (KEY=VALUE lines; `$CONVEYOR_HOME/secrets.env` or
CONVEYOR_SECRETS_FILE) or else from the runner's environment variable of the same name. Values
are never written to the store; every resolved value is masked in the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from conveyor.errors import ConveyorError

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingSecret(ConveyorError):
    pass


def read_secrets_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
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


class Secrets:
    def __init__(self, file_values: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self._file = dict(file_values)
        self._environ = environ
        self.used: dict[str, str] = {}

    @classmethod
    def load(cls, home: Path, environ: Mapping[str, str] | None = None) -> Secrets:
        environ = os.environ if environ is None else environ
        path = Path(environ.get("CONVEYOR_SECRETS_FILE") or home / "secrets.env")
        return cls(read_secrets_file(path), environ)

    def get(self, name: str) -> str:
        if name in self._file:
            value = self._file[name]
        elif name in self._environ:
            value = self._environ[name]
        else:
            raise MissingSecret(
                f"secret {name} is not set",
                hint=f"add {name}=... to the secrets file, or export {name} before starting",
            )
        self.used[name] = value
        return value

    def substitute(self, text: str) -> str:
        return SECRET_REF.sub(lambda m: self.get(m.group(1)), text)

    def all_values(self) -> list[str]:
        """Every value worth masking: the whole file, plus what was read from the environment."""
        return [*self._file.values(), *self.used.values()]

    def names(self) -> set[str]:
        return set(self._file) | set(self.used)
