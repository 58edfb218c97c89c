"""What is wrong with a pipeline file, said so a person can fix it without a traceback."""

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic_core import ErrorDetails

from conveyor.errors import ConveyorError

#: A place in the document: mapping keys and sequence indexes from the top.
KeyPath = tuple[str | int, ...]
#: 1-based (line, column).
Position = tuple[int, int]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, located as precisely as the source allows."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return text if self.hint is None else f"{text} — {self.hint}"


class PipelineError(ConveyorError):
    """The pipeline file cannot be used; `problems` lists everything found, sorted by line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class Finding:
    """A problem before it is tied to a file: `position` is filled in from the key path
    when the finder did not know it (the semantic checks only know paths)."""

    path: KeyPath
    message: str
    hint: str | None = None
    position: Position | None = None


def printable(text: str) -> str:
    """`text` with control characters escaped, so one problem stays one line of output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def format_path(path: KeyPath) -> str:
    """`jobs.package.needs[0]`; keys that would read ambiguously are quoted: `jobs["a.b"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def suggest(word: str, choices: Iterable[str], what: str = "valid keys") -> str | None:
    """`did you mean 'x'?` for a near miss, else the list of choices (when short enough to read)."""
    options = sorted(set(choices))
    if not options:
        return None
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if len(options) <= 12:
        return f"{what}: {', '.join(options)}"
    return None


def describe(value: object) -> str:
    """How a YAML value reads to the person who wrote it (for `got ...` in messages)."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown) if "'" in shown else f"'{shown}'"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# What pydantic's error types expect, as the rest of "expected ..." / "must be ...".
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
    "greater_than": ("gt", "greater than"),
    "less_than": ("lt", "less than"),
}


def explain(error: ErrorDetails, expected: str = "expected") -> tuple[str, str | None]:
    """What is wrong with a value, from one pydantic validation error, and a hint if there is
    one: ``expected an integer, got 'x'`` (``expected`` is the verb, e.g. "must be").
    Custom errors carry their text and hint in ``detail`` and ``hint`` (conveyor.spec.fields);
    a choice spelt almost right is suggested."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if "detail" in ctx:
        hint = ctx.get("hint")
        return str(ctx["detail"]), str(hint) if hint is not None else None
    if kind in _EXPECTED:
        return f"{expected} {_EXPECTED[kind]}, got {describe(value)}", None
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = suggest(str(value), choices) if isinstance(value, str) else None
        hint = hint if hint and hint.startswith("did you mean") else None
        return f"{expected} {ctx.get('expected')}, got {describe(value)}", hint
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(name)}, got {describe(value)}", None
    return str(error["msg"]).removeprefix("Value error, "), None
