"""Errors a user is expected to meet: they carry a message and an exit code, never a traceback."""

from __future__ import annotations

import errno


class ConveyorError(Exception):
    """An expected failure, shown to the user as one clear message."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class NotFound(ConveyorError):
    """A run, job or other record the user named does not exist."""


class GitError(ConveyorError):
    """A repository or commit could not be read."""


class StaleLease(ConveyorError):
    """The job was leased to another runner since this one took it."""


def listen_failure(exc: OSError, host: str, port: int, remedy: str) -> tuple[str, str | None]:
    """The message and hint for a failed bind of ``host:port``. A port already in use is the
    usual case, and the caller knows its remedy (another ``--port``, another ``port:``)."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use", f"stop what listens there, or {remedy}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}", None
