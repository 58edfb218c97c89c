"""A steady load on one port: N requests a second, each on a fresh connection (so each one goes
through the stable port's route as it is at that moment), from a thread, until stopped or a
bounded number of requests is reached. What a user would notice is recorded: every failed
request with when and why, and every answer's body and latency."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Load"]


@dataclass
class Load:
    port: int
    rate: float = 50.0
    max_requests: int = 5000
    timeout: float = 2.0
    path: str = "/"
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def _run(self) -> None:
        started = time.monotonic()
        for n in range(self.max_requests):
            # Paced against the start, not the previous request: a slow answer is not followed
            # by a pause, so the rate holds through an outage.
            delay = started + n / self.rate - time.monotonic()
            if self._stop.wait(max(delay, 0.0)):
                return
            self._one(time.monotonic() - started)
            self.sent += 1

    def _one(self, at: float) -> None:
        began = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
                s.sendall(f"GET {self.path} HTTP/1.0\r\nHost: load\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError as exc:
            self.failures.append((at, f"{type(exc).__name__}: {exc}"))
            return
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        if status != [b"200"]:
            self.failures.append((at, f"answer {head[:40]!r}" if data else "closed, no answer"))
            return
        self.latencies.append(time.perf_counter() - began)
        self.answers[body.decode(errors="replace")] += 1
