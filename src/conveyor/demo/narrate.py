"""The demo's narration: one line per step with its result and how long it took, chapter titles,
a spinner while something is awaited and a countdown before the demo approves (in a terminal);
plain lines otherwise, never wrapped, so that a log or a test reads them whole."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

MARKS = {
    "ok": ("✔", "green"),
    "fail": ("✖", "red"),
    "warn": ("⚠", "yellow"),
    "back": ("↺", "yellow"),
    "wait": ("◷", "cyan"),
    "info": ("•", "blue"),
}
KEY_WIDTH = 14


class Narrator:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def title(self, text: str) -> None:
        self.console.print(Text(text, style="bold"))

    def chapter(self, text: str) -> None:
        self.console.print()
        self.console.print(Text(text, style="bold underline"))

    def fact(self, key: str, value: str) -> None:
        """A setting the person may want to copy: a folder, an address, a token."""
        line = Text("  ")
        line.append(f"{key:<12}", style="dim")
        line.append(value)
        self.console.print(line)

    def step(self, kind: str, key: str, result: str, seconds: float | None = None) -> None:
        """``[ elapsed] ✔ key  result  (took)``: what happened, and how long it took."""
        mark, colour = MARKS[kind]
        line = Text(f"  [{self.elapsed:6.1f}s] ", style="dim")
        line.append(f"{mark} ", style=colour)
        line.append(f"{key:<{KEY_WIDTH}}", style="bold")
        line.append(result)
        if seconds is not None:
            line.append(f"  ({seconds:.1f} s)", style="dim")
        self.console.print(line)

    def note(self, text: str) -> None:
        self.console.print(Text(f"    {text}", style="dim"))

    def say(self, text: str) -> None:
        self.console.print(Text(text))

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A spinner in a terminal; nothing in a log (the step line that follows says it)."""
        if not self.console.is_terminal:
            yield
            return
        with self.console.status(Text(what), spinner="dots"):
            yield

    def countdown(self, seconds: float, what: str) -> None:
        """A pause a person can see: "olga approves in 3 s…". Zero seconds: no pause at all."""
        if seconds <= 0:
            return
        end = time.monotonic() + seconds
        if not self.console.is_terminal:
            self.note(f"{what} in {seconds:g} s")
            time.sleep(seconds)
            return
        with self.console.status(Text(f"{what} in {seconds:.0f} s"), spinner="clock") as status:
            while (left := end - time.monotonic()) > 0:
                status.update(Text(f"{what} in {left:.0f} s …"))
                time.sleep(min(left, 0.2))
