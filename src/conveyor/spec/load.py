"""Text or file to a validated `Pipeline`, or a `PipelineError` listing every problem found."""

import functools
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from conveyor.extensions import ExtensionError, Kind, registry
from conveyor.spec import checks
from conveyor.spec.blocks import DEPLOY_KEYS, ExtensionBlock, target_options
from conveyor.spec.fields import TARGET_PATTERN
from conveyor.spec.indentation import misplaced_keys
from conveyor.spec.models import EXTENSION_PREFIX, SKIP_GRAPH_CHECKS, Deploy, Pipeline
from conveyor.spec.problems import (
    Finding,
    KeyPath,
    PipelineError,
    Position,
    Problem,
    describe,
    explain,
    format_path,
    printable,
    suggest,
)
from conveyor.spec.yamlpos import Document, read_document


def parse_pipeline(text: str, filename: str = "conveyor.yml") -> Pipeline:
    """Validate pipeline YAML; raise `PipelineError` with every problem, sorted by line."""
    doc = read_document(text, keep_text=_is_env_value)
    findings = list(doc.findings)
    pipeline: Pipeline | None = None
    if doc.fatal:  # no data to check further
        raise PipelineError(_problems(filename, doc, findings))
    if doc.empty:
        findings.append(
            Finding((), "the file is empty: a pipeline needs at least 'service' and 'jobs'")
        )
    elif not isinstance(doc.data, dict):
        findings.append(
            Finding(
                (),
                "the top level must be a mapping with keys such as 'service' and 'jobs', "
                f"got {describe(doc.data)}",
                position=doc.values.get(()),
            )
        )
    else:
        # Top-level `x-*` keys hold YAML anchors for reuse (as in Compose files); not validated.
        data = {k: v for k, v in doc.data.items() if not k.startswith(EXTENSION_PREFIX)}
        try:
            pipeline = Pipeline.model_validate(data, context={SKIP_GRAPH_CHECKS: True})
        except ValidationError as exc:
            # A value the YAML layer already objected to (bad tag) needs no second message.
            seen = {(f.path, f.position) for f in doc.findings}
            findings += [f for f in _from_pydantic(exc, doc) if (f.path, f.position) not in seen]
        findings.extend(checks.findings_from_data(data))
        findings.extend(_target_findings(data, doc))
        findings.extend(misplaced_keys(text, doc, functools.partial(_keys_at, data=data)))
    if findings or pipeline is None:
        raise PipelineError(_problems(filename, doc, findings))
    return pipeline


def load_pipeline(path: Path | str) -> Pipeline:
    """Read and validate a pipeline file. Unreadable files are a `PipelineError` too."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise PipelineError([Problem(name, None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise PipelineError([Problem(name, None, None, "", "is a directory, not a file")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PipelineError([Problem(name, None, None, "", f"cannot read: {reason}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        problem = Problem(
            name,
            line,
            column,
            "",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded)",
            "a pipeline file must be UTF-8 text: re-save it as UTF-8 (or is it a binary file?)",
        )
        raise PipelineError([problem]) from None
    return parse_pipeline(text, name)


def _is_env_value(path: KeyPath) -> bool:
    return len(path) >= 2 and path[-2] == "env"


def _problems(filename: str, doc: Document, findings: list[Finding]) -> list[Problem]:
    problems: dict[Problem, None] = {}  # ordered set: one check may be reached twice
    for f in findings:
        # Findings without a position come from the graph checks and name one reference.
        position = f.position or _locate(doc, f.path, prefer_key=False)
        line, column = position if position else (None, None)
        hint = printable(f.hint) if f.hint is not None else None
        path, message = printable(format_path(f.path)), printable(f.message)
        problems[Problem(filename, line, column, path, message, hint)] = None
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0, p.path, p.message))


def _locate(doc: Document, path: KeyPath, *, prefer_key: bool) -> Position | None:
    """Where `path` was written, else its nearest written ancestor. A mapping or list is
    shown at its key (the line that names it); a scalar at the value itself."""
    for end in range(len(path), -1, -1):
        sub = path[:end]
        key, value = doc.keys.get(sub), doc.values.get(sub)
        if end < len(path) or prefer_key:
            if key or value:
                return key or value
        elif value or key:
            return value or key
    return None


def _walk(data: object, loc: tuple[int | str, ...]) -> tuple[KeyPath, object, list[int | str]]:
    """Follow pydantic's `loc` through the data as far as it exists there."""
    path: list[str | int] = []
    current = data
    parts = list(loc)
    while parts:
        part = parts[0]
        # Two branches because each guard narrows `current` differently for the type checker.
        if isinstance(current, dict) and isinstance(part, str) and part in current:  # noqa: SIM114
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            break
        path.append(part)
        parts.pop(0)
    return tuple(path), current, parts


def _target_findings(data: dict[str, Any], doc: Document) -> list[Finding]:
    """Each `deploy:` checked by its target's options model (the model itself leaves this to
    the loader, which knows where each key was written)."""
    findings: list[Finding] = []
    environments = data.get("environments")
    for name, env in environments.items() if isinstance(environments, dict) else ():
        deploy = env.get("deploy") if isinstance(env, dict) else None
        if not isinstance(deploy, dict):
            continue
        target = deploy.get("target", "process")
        if not isinstance(target, str) or not re.fullmatch(TARGET_PATTERN, target):
            continue  # the model says what is wrong with the name
        path: KeyPath = ("environments", name, "deploy")
        try:
            options = registry().get(Kind.TARGET, target).options
        except ExtensionError:
            known = registry().names(Kind.TARGET)
            hint = suggest(target, known, "targets")
            findings.append(Finding((*path, "target"), f"unknown deploy target '{target}'", hint))
            continue
        try:
            target_options(target, deploy)
        except ValidationError as exc:
            allowed = functools.partial(_allowed_keys, root=options, skip=len(path))
            findings += _from_pydantic(exc, doc, prefix=path, allowed=allowed)
    return findings


def _from_pydantic(
    exc: ValidationError,
    doc: Document,
    *,
    prefix: KeyPath = (),
    allowed: Callable[[KeyPath], list[str]] | None = None,
) -> list[Finding]:
    """Findings for pydantic's errors; ``prefix``: where the validated mapping sits in the
    file; ``allowed``: the keys a mapping at a path accepts (default: the pipeline's models)."""
    findings: list[Finding] = []
    for error in exc.errors():
        path, value, rest = _walk(doc.data, (*prefix, *error["loc"]))
        kind = error["type"]
        if kind == "extra_forbidden" and path:
            key, parent = str(path[-1]), path[:-1]
            allowed_keys = (allowed or _allowed_keys)(parent)
            findings.append(
                Finding(
                    parent, f"unknown key '{key}'", suggest(key, allowed_keys), doc.keys.get(path)
                )
            )
        elif kind == "missing":
            missing = rest[0] if rest else "?"
            findings.append(
                Finding(
                    path,
                    f"missing required key '{missing}'",
                    position=_locate(doc, path, prefer_key=True),
                )
            )
        elif rest and rest[0] == "[key]" and path:
            message, hint = explain(error)
            findings.append(Finding(path[:-1], message, hint, doc.keys.get(path)))
        else:
            message, hint = explain(error)
            container = isinstance(value, dict | list)
            position = _locate(doc, path, prefer_key=container or bool(rest))
            findings.append(Finding(path, message, hint, position))
    return _drop_explained_missing(findings)


def _drop_explained_missing(findings: list[Finding]) -> list[Finding]:
    """`servce: x` gives 'unknown key servce — did you mean service?' and 'missing service':
    the second says nothing new."""
    suggested = {
        (f.path, f.hint) for f in findings if f.message.startswith("unknown key") and f.hint
    }
    return [
        f
        for f in findings
        if not (
            f.message.startswith("missing required key ")
            and (f.path, f"did you mean {f.message.removeprefix('missing required key ')}?")
            in suggested
        )
    ]


def _allowed_keys(path: KeyPath, root: type[BaseModel] = Pipeline, skip: int = 0) -> list[str]:
    """Keys the model at `path` accepts (by their YAML spelling); ``root`` is the model of the
    mapping at ``path[:skip]`` (a target's options model under `deploy:`)."""
    model = _model_at(path[skip:], root)
    if model is None:
        return []
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return keys + sorted(DEPLOY_KEYS) if skip and len(path) == skip else keys


def _keys_at(path: KeyPath, data: object) -> list[str] | None:
    """The keys the mapping at ``path`` accepts; None where no model describes it. A
    `deploy:` accepts its target's options too."""
    model = _model_at(path)
    if model is None:
        return None
    keys = [f.alias or name for name, f in model.model_fields.items()]
    if model is Deploy:
        _, deploy, rest = _walk(data, path)
        target = deploy.get("target", "process") if isinstance(deploy, dict) and not rest else None
        try:
            options = registry().get(Kind.TARGET, target) if isinstance(target, str) else None
        except ExtensionError:
            options = None  # the unknown target is reported on its own
        if options is not None:
            keys += [f.alias or name for name, f in options.options.model_fields.items()]
    return keys


def _model_at(path: KeyPath, root: type[BaseModel] = Pipeline) -> type[BaseModel] | None:
    tp: Any = root
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            if not isinstance(part, str) or part not in fields:
                return None
            tp = fields[part].annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, ExtensionBlock):
            return tp.extended()  # its keys include the registered extensions
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp
