"""Secrets at rest: values sealed with Fernet (AES-128-CBC and HMAC-SHA256) under one key file.

The key lives outside the database (`$CONVEYOR_HOME/secrets.key`, or CONVEYOR_SECRETS_KEY_FILE),
so a copy of the database (a backup, a dump, a stolen file) holds no usable secret without it.
A sealed value names its key by the first 8 hex digits of the key's SHA-256, so a missing or
different key file is reported as what it is instead of as damaged data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from conveyor.errors import ConveyorError

PREFIX = "fernet:"
_RESTORE = (
    "restore the key file from your backup, or point CONVEYOR_SECRETS_KEY_FILE at it "
    "(every server of this database needs the same key)"
)


class SecretsKeyError(ConveyorError):
    """The key file is missing, unreadable, or not the key the stored secrets were sealed with."""


def key_path(home: Path, configured: Path | None = None) -> Path:
    """``configured`` (CONVEYOR_SECRETS_KEY_FILE), else secrets.key in the data directory."""
    return configured or home / "secrets.key"


def is_sealed(text: str) -> bool:
    return text.startswith(PREFIX)


def sealed_key_id(sealed: str) -> str:
    return sealed.removeprefix(PREFIX).partition(":")[0]


class Key:
    def __init__(self, path: Path, raw: bytes) -> None:
        try:
            self._fernet = Fernet(raw)
        except ValueError:
            raise SecretsKeyError(
                f"the secrets key file {path} does not hold a Fernet key "
                "(44 characters of URL-safe base64)",
                hint=_RESTORE,
            ) from None
        self.path = path
        self.id = hashlib.sha256(raw).hexdigest()[:8]

    @classmethod
    def load(cls, path: Path) -> Key | None:
        """The key in `path`, or None if there is no such file."""
        try:
            raw = path.read_bytes().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsKeyError(
                f"cannot read the secrets key file {path}: {exc.strerror or exc}",
                hint="the server's user must be able to read it (and nobody else)",
            ) from None
        return cls(path, raw)

    @classmethod
    def create(cls, path: Path) -> Key:
        """A new key in `path`, readable by this user only; if another process made one first
        (two commands on a new data directory), that one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key() + b"\n")
                out.flush()
                os.fsync(out.fileno())
            # link() refuses to replace an existing file, unlike rename(): the first key wins.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        key = cls.load(path)
        assert key is not None
        return key

    def seal(self, value: str) -> str:
        token = self._fernet.encrypt(value.encode("utf-8")).decode("ascii")
        return f"{PREFIX}{self.id}:{token}"

    def unseal(self, sealed: str, what: str) -> str:
        """The clear value of `sealed`; `what` names it in errors ("secret API_TOKEN of shop")."""
        key_id, _, token = sealed.removeprefix(PREFIX).partition(":")
        if key_id != self.id:
            raise SecretsKeyError(
                f"the {what} was sealed with the secrets key {key_id}, but the key file "
                f"{self.path} holds key {self.id}",
                hint=_RESTORE,
            )
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise ConveyorError(
                f"the {what} is damaged in the database and cannot be decrypted",
                hint="set it again",
            ) from None


def missing_key(path: Path, key_id: str) -> SecretsKeyError:
    return SecretsKeyError(
        f"the secrets key file {path} is missing, and the database holds secrets sealed "
        f"with key {key_id}",
        hint=_RESTORE,
    )
