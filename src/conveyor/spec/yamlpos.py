"""YAML text to plain Python data, remembering where every key and value was written.

PyYAML's constructors lose positions and resolve YAML 1.1 booleans (`on`, `yes`, `no`), which
would turn the `on:` key into `True`. So we compose the node tree ourselves and convert it with
YAML 1.2 core-schema rules: keys are always their source text, only `true`/`false` are booleans.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from conveyor.spec.problems import Finding, KeyPath, Position

_T = "tag:yaml.org,2002:"
STR_TAG = _T + "str"
NULL_TAG = _T + "null"
BOOL_TAG = _T + "bool"
INT_TAG = _T + "int"
FLOAT_TAG = _T + "float"
MERGE_TAG = _T + "merge"
SEQ_TAG = _T + "seq"
MAP_TAG = _T + "map"

# Generous for any real pipeline; stops alias bombs ("billion laughs") and runaway nesting.
MAX_VALUES = 100_000
MAX_DEPTH = 100


class _Loader(yaml.SafeLoader):
    """SafeLoader whose implicit tags follow the YAML 1.2 core schema."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    (NULL_TAG, r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    (BOOL_TAG, r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    (INT_TAG, r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    (
        FLOAT_TAG,
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        list("-+.0123456789"),
    ),
    (MERGE_TAG, r"<<", ["<"]),
]:
    _Loader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), _first)


#: Paths kept per block scalar: aliases may repeat one block at very many places.
MAX_BLOCK_PATHS = 8


@dataclass
class BlockScalar:
    """A literal (`|`) or folded (`>`) scalar: where its text was written, so the lines of
    the text can be read from the source as they were typed (1-based, inclusive), and the
    paths it is the value of (more than one through aliases and merge keys)."""

    paths: list[KeyPath]
    style: str
    first_line: int
    last_line: int


@dataclass
class Document:
    """The converted data plus where each path was written (1-based line, column)."""

    data: object = None
    empty: bool = False
    values: dict[KeyPath, Position] = field(default_factory=dict)
    keys: dict[KeyPath, Position] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    blocks: list[BlockScalar] = field(default_factory=list)
    #: True when the text could not be turned into data at all (syntax error, alias bomb).
    fatal: bool = False


class _Abort(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def _pos(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def read_document(text: str, keep_text: Callable[[KeyPath], bool] | None = None) -> Document:
    """Parse `text`; `keep_text(path)` says where numbers and booleans must stay as written
    (environment variables: `VERSION: 1.10` must not become "1.1")."""
    doc = Document()
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        doc.findings.append(_syntax_finding(exc))
        doc.fatal = True
        return doc
    except ReaderError as exc:
        doc.findings.append(_reader_finding(text, exc))
        doc.fatal = True
        return doc
    except yaml.YAMLError as exc:
        doc.findings.append(Finding((), f"YAML syntax error: {exc}"))
        doc.fatal = True
        return doc
    except RecursionError:
        doc.findings.append(Finding((), f"nested more than {MAX_DEPTH} levels deep"))
        doc.fatal = True
        return doc
    # `---` alone composes to an empty plain scalar: still an empty file to the person.
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG and not root.value):
        doc.empty = True
        return doc
    converter = _Converter(doc, keep_text or (lambda _path: False))
    try:
        doc.data = converter.convert(root, (), 0)
    except _Abort as exc:
        doc.findings.append(exc.finding)
        doc.fatal = True
    return doc


def _syntax_finding(exc: yaml.MarkedYAMLError) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    position = (mark.line + 1, mark.column + 1) if mark is not None else None
    problem = exc.problem or "invalid YAML"
    where = ""
    if exc.context and exc.context_mark is not None:
        cm = exc.context_mark
        where = f"{exc.context} that starts at line {cm.line + 1}, column {cm.column + 1}"
    hint: str | None = where or exc.context
    if "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tabs for indentation"
    elif "another document" in problem:
        problem = "the file holds more than one YAML document"
        hint = "a pipeline file is one document: remove this '---' and what follows, or merge them"
    elif problem.startswith("expected <block end>"):
        hint = "check the indentation of this line" + (f" ({where})" if where else "")
    return Finding((), f"YAML syntax error: {problem}", hint, position)


def _reader_finding(text: str, exc: ReaderError) -> Finding:
    index = max(0, min(int(exc.position), len(text)))
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    char = exc.character
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char
    shown = f"#x{code:04x}" if isinstance(code, int) else repr(code)
    return Finding(
        (),
        f"the file contains a character YAML does not allow ({shown})",
        "a pipeline file must be plain UTF-8 text, not a binary file",
        (line, column),
    )


class _Converter:
    def __init__(self, doc: Document, keep_text: Callable[[KeyPath], bool]) -> None:
        self.doc = doc
        self.keep_text = keep_text
        self.count = 0
        # Nodes being converted right now: meeting one again means a recursive alias.
        self.active: set[int] = set()
        # Block scalars by node: aliases add paths to one record, not records.
        self.blocks: dict[int, BlockScalar] = {}

    def convert(self, node: Node, path: KeyPath, depth: int) -> object:
        self.count += 1
        if self.count > MAX_VALUES:
            # The path means little by now (aliases inside aliases); the node's place does.
            message = f"the document expands to more than {MAX_VALUES} values"
            raise _Abort(Finding((), message, "check the use of aliases (*name)", _pos(node)))
        if depth > MAX_DEPTH:
            raise _Abort(
                Finding(path, f"nested more than {MAX_DEPTH} levels deep", None, _pos(node))
            )
        self.doc.values[path] = _pos(node)
        if isinstance(node, ScalarNode):
            if node.style in ("|", ">"):
                self._block(node, path)
            return self._scalar(node, path)
        if id(node) in self.active:
            self._add(path, "an alias refers to the value that contains it", _pos(node))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, SEQ_TAG, path)
                return [
                    self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)
                ]
            if isinstance(node, MappingNode):
                self._check_tag(node, MAP_TAG, path)
                return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))
        return None  # pragma: no cover - the composer only builds the three node kinds

    def _block(self, node: ScalarNode, path: KeyPath) -> None:
        block = self.blocks.get(id(node))
        if block is None:
            # The text starts on the line after the `|`; the end mark sits at the start of the
            # first line after it, or on the last line when the file ends there.
            end = node.end_mark
            last = end.line + 1 if end.column else end.line
            block = BlockScalar([path], str(node.style), node.start_mark.line + 2, last)
            self.blocks[id(node)] = block
            self.doc.blocks.append(block)
        elif len(block.paths) < MAX_BLOCK_PATHS:
            block.paths.append(path)

    def _add(
        self, path: KeyPath, message: str, position: Position, hint: str | None = None
    ) -> None:
        self.doc.findings.append(Finding(path, message, hint, position))

    def _check_tag(self, node: Node, expected: str, path: KeyPath) -> None:
        if node.tag != expected:
            self._add(path, f"unsupported YAML tag '{node.tag}'", _pos(node))

    def _mapping(self, node: MappingNode, path: KeyPath, depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._add(path, "a key must be a plain name, not a list or mapping", _pos(key_node))
                continue
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            key = key_node.value
            if key in result:
                line, column = self.doc.keys[(*path, key)]
                here = _pos(key_node)
                first = f"on line {line}" if line != here[0] else f"at column {column} of this line"
                self._add(path, f"duplicate key '{key}' (first defined {first})", here)
                continue
            self.doc.keys[(*path, key)] = _pos(key_node)
            result[key] = self.convert(value_node, (*path, key), depth + 1)
        # YAML merge keys: explicit keys win, then earlier merged mappings over later ones.
        for source in merges:
            for key_node, value_node in self._merge_pairs(source, path):
                key = key_node.value
                if key not in result:
                    self.doc.keys[(*path, key)] = _pos(key_node)
                    result[key] = self.convert(value_node, (*path, key), depth + 1)
        return result

    def _merge_pairs(self, source: Node, path: KeyPath) -> list[tuple[ScalarNode, Node]]:
        mappings = source.value if isinstance(source, SequenceNode) else [source]
        pairs: list[tuple[ScalarNode, Node]] = []
        seen: set[int] = set()
        for mapping in mappings:
            if not isinstance(mapping, MappingNode):
                self._add(path, "'<<' must merge a mapping or a list of mappings", _pos(source))
                return pairs
            if id(mapping) in seen or id(mapping) in self.active:
                continue
            seen.add(id(mapping))
            nested: list[Node] = []
            for key_node, value_node in mapping.value:
                if isinstance(key_node, ScalarNode) and key_node.tag == MERGE_TAG:
                    nested.append(value_node)
                elif isinstance(key_node, ScalarNode):
                    pairs.append((key_node, value_node))
            self.active.add(id(mapping))
            try:
                for inner in nested:
                    pairs.extend(self._merge_pairs(inner, path))
            finally:
                self.active.discard(id(mapping))
        return pairs

    def _scalar(self, node: ScalarNode, path: KeyPath) -> object:
        tag, text = node.tag, node.value
        if tag == STR_TAG:
            return text
        if tag == NULL_TAG:
            return None
        if tag in (BOOL_TAG, INT_TAG, FLOAT_TAG) and self.keep_text(path):
            return text
        try:
            if tag == BOOL_TAG:
                return _to_bool(text)
            if tag == INT_TAG:
                return _to_int(text)
            if tag == FLOAT_TAG:
                return _to_float(text)
        except ValueError:
            kind = tag.rsplit(":", 1)[-1]
            self._add(path, f"'{text}' is not a valid !!{kind}", _pos(node))
            return text
        self._add(path, f"unsupported YAML tag '{tag}'", _pos(node), "write the value as a string")
        return text


def _to_bool(text: str) -> bool:
    lowered = text.lower()
    # Explicit `!!bool yes` is a request for YAML 1.1 words; plain `yes` never gets here.
    if lowered in ("true", "yes", "on", "y"):
        return True
    if lowered in ("false", "no", "off", "n"):
        return False
    raise ValueError(text)


def _to_int(text: str) -> int:
    cleaned = text.replace("_", "")
    sign = -1 if cleaned.startswith("-") else 1
    digits = cleaned.lstrip("+-")
    if digits.startswith(("0x", "0X")):
        return sign * int(digits[2:], 16)
    if digits.startswith(("0o", "0O")):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


def _to_float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered in (".inf", "+.inf"):
        return float("inf")
    if lowered == "-.inf":
        return float("-inf")
    if lowered == ".nan":
        return float("nan")
    return float(lowered)
