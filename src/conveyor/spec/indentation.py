"""Keys that YAML read as script lines: the indentation mistake a block scalar hides.

    build:
      run: |
        make dist
        artifacts: [dist/*]   # meant as a key of the job, indented like the script

is valid YAML: `artifacts: [dist/*]` is the last line of the script, and the job keeps no
artifacts. No shell command is spelt `name:`, so a line of a `|` or `>` block that starts with
a key the surrounding mappings accept (`artifacts:`, `needs:`, `health:`...) is reported. Lines
that are not the start of a shell command are left alone: heredoc bodies (a script may well
write YAML), the inside of quoted strings that span lines, continuation lines, comments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from conveyor.spec.problems import Finding, KeyPath, format_path
from conveyor.spec.yamlpos import Document

__all__ = ["KeysAt", "misplaced_keys"]

#: The keys the mapping at a path accepts (by their YAML spelling); None where the path is no
#: modelled mapping (a list, the `env:` mapping, a value).
KeysAt = Callable[[KeyPath], list[str] | None]

# YAML's line breaks (not str.splitlines', which also splits at form feeds and the like).
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_KEY_LINE = re.compile(r"(?P<dash>- +)?(?P<key>[A-Za-z_][A-Za-z0-9_-]*):(?:[ \t]|$)")
_HEREDOC = re.compile(r"<<-?[ \t]*(?:'([^']*)'|\"([^\"]*)\"|\\?([A-Za-z0-9_][A-Za-z0-9_.-]*))")
# Where a `#` starts a comment in shell: at the start of a word.
_WORD_BREAK = " \t;|&()"


@dataclass(frozen=True)
class _KeyLine:
    line: int  # of the file, from 1
    key: str
    dash: bool  # written `- key:`, as the first key of a list item
    indent: int


@dataclass(frozen=True)
class _Owner:
    path: KeyPath  # a mapping around the block
    child: str | int  # its key (or index) on the way to the block
    keys: list[str]


def misplaced_keys(text: str, doc: Document, keys_at: KeysAt) -> list[Finding]:
    """A finding for each line of a block scalar (a script) that reads as a key of a mapping
    around the block; ``keys_at`` says which keys a mapping accepts."""
    lines = _LINE_BREAK.split(text)
    findings: list[Finding] = []
    for block in doc.blocks:
        # A block written under `x-*` and merged into a job is judged where it is used.
        placed = ((p, _owners(p, keys_at)) for p in block.paths)
        path, owners = next(((p, o) for p, o in placed if o), ((), []))
        if not owners:
            continue  # in `env:` or another free-form mapping, or a list: any text is meant
        script = lines[block.first_line - 1 : block.last_line]
        indents = [len(line) - len(line.lstrip(" ")) for line in script if line.strip()]
        if not indents:
            continue
        for found in _key_lines(script, block.first_line):
            finding = _finding(block.style, path, found, owners, script_indent=indents[0])
            if finding is not None:
                findings.append(finding)
    return findings


def _owners(path: KeyPath, keys_at: KeysAt) -> list[_Owner]:
    """The modelled mappings around the value at ``path``, innermost first; none unless the
    value is itself a key of a modelled mapping."""
    if not path or not isinstance(path[-1], str) or keys_at(path[:-1]) is None:
        return []
    owners = []
    for end in range(len(path) - 1, -1, -1):
        keys = keys_at(path[:end])
        if keys is not None:
            owners.append(_Owner(path[:end], path[end], keys))
    return owners


def _finding(
    style: str,
    path: KeyPath,
    found: _KeyLine,
    owners: list[_Owner],
    script_indent: int,
) -> Finding | None:
    if found.dash:
        # `- name:` starts an item of a list: only a list item around the block can mean it.
        owner = next(
            (o for o in owners if o.path and isinstance(o.path[-1], int) and found.key in o.keys),
            None,
        )
    else:
        owner = next((o for o in owners if found.key in o.keys), None)
    if owner is None:
        return None
    key = str(path[-1])
    written = f"{'- ' if found.dash else ''}{found.key}:"
    depth = "like the script" if found.indent <= script_indent else "deeper than the script"
    message = (
        f"`{written}` is inside the `{key}: {style}` block of {_name(path[:-1])} "
        f"(indented {depth}), so it is run as a line of the script"
    )
    if found.dash:
        items = str(owner.path[-2])
        hint = f"if it starts another entry of `{items}:`, indent its `-` like this entry's"
    else:
        hint = f"if it is a key of {_name(owner.path)}, indent it like `{owner.child}:`"
    return Finding(path, message, hint, (found.line, found.indent + 1))


def _name(path: KeyPath) -> str:
    """How a person calls the mapping at ``path``: "job build", "step 2 of job build"."""
    match path:
        case ():
            return "the pipeline's top level"
        case ("jobs", str(job)):
            return f"job {job}"
        case ("jobs", str(job), "steps", int(index)):
            return f"step {index + 1} of job {job}"
        case ("environments", str(env)):
            return f"environment {env}"
        case ("environments", str(env), "deploy"):
            return f"the deploy of environment {env}"
        case ("environments", str(env), "verify", int(index)):
            return f"verify step {index + 1} of environment {env}"
    return f"`{format_path(path)}`"


def _key_lines(script: list[str], first_line: int) -> Iterator[_KeyLine]:
    """Lines that start a shell command and read as `key:` (or `- key:`); the script's first
    line is line ``first_line`` of the file."""
    quote: str | None = None  # the quote of a string still open at the end of a line
    heredocs: list[str] = []  # terminators of the heredocs being read, in order
    continued = False  # the previous line ended with a backslash
    value_of: int | None = None  # indentation of the last key found: deeper lines are its value
    for offset, line in enumerate(script):
        if heredocs:
            if line.strip() == heredocs[0]:
                heredocs.pop(0)
            continue
        stripped = line.lstrip(" \t")
        indent = len(line) - len(stripped)
        if value_of is not None and stripped:
            if indent > value_of:
                continue
            value_of = None
        if quote is None and not continued:
            match = _KEY_LINE.match(stripped)
            if match:
                dash = match.group("dash") is not None
                yield _KeyLine(first_line + offset, match.group("key"), dash, indent)
                value_of = indent
                continue
        quote, started = _scan(line, quote)
        heredocs.extend(started)
        continued = quote is None and line.rstrip(" \t").endswith("\\")


def _scan(line: str, quote: str | None) -> tuple[str | None, list[str]]:
    """Follow shell quoting through one line: the quote still open at its end, and the
    terminators of the heredocs it starts."""
    heredocs: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if quote == "'":
            quote = None if char == "'" else quote
        elif quote == '"':
            if char == "\\":
                i += 1
            elif char == '"':
                quote = None
        elif char == "\\":
            i += 1
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in _WORD_BREAK):
            break
        elif line.startswith("<<<", i):
            i += 3
            continue
        elif line.startswith("<<", i):
            match = _HEREDOC.match(line, i)
            if match:
                heredocs.append(next(g for g in match.groups() if g is not None))
                i = match.end()
                continue
            i += 2
            continue
        i += 1
    return quote, heredocs
