"""Checks across the whole file: `needs` and `after` name things that exist and form no cycle.

They work on plain names and key paths so the loader can run them on the raw data even when
other parts of the file failed validation (all problems in one pass), and the model can run
them on itself when built in code.
"""

import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from conveyor.spec.problems import Finding, KeyPath, suggest

_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Ref:
    """A name written somewhere (`needs: [build]`, `after: staging`) and where."""

    name: str
    path: KeyPath


def graph_findings(
    jobs: Mapping[str, Sequence[Ref]], environments: Mapping[str, Ref | None]
) -> list[Finding]:
    """Unknown or cyclic `needs` between jobs and `after` between environments."""
    env_refs = {name: [ref] if ref else [] for name, ref in environments.items()}
    return [
        *_graph(jobs, "job", "in needs", "dependency cycle"),
        *_graph(env_refs, "environment", "in after", "promotion cycle"),
    ]


def findings_from_data(data: Mapping[str, object]) -> list[Finding]:
    """`graph_findings` on unvalidated data, skipping what has the wrong shape (validation
    reports that)."""
    jobs: dict[str, list[Ref]] = {}
    raw_jobs = data.get("jobs")
    if isinstance(raw_jobs, dict):
        for name, job in raw_jobs.items():
            needs = job.get("needs") if isinstance(job, dict) else None
            path: KeyPath = ("jobs", name, "needs")
            if isinstance(needs, list):
                refs: list[Ref] = []
                for i, item in enumerate(needs):
                    needed = _as_name(item)
                    if needed is not None:
                        refs.append(Ref(needed, (*path, i)))
                jobs[name] = refs
            elif isinstance(needs, str):  # a lone number is a type error, not a name
                jobs[name] = [Ref(needs, path)]
            else:
                jobs[name] = []
    envs: dict[str, Ref | None] = {}
    raw_envs = data.get("environments")
    if isinstance(raw_envs, dict):
        for name, env in raw_envs.items():
            after = _as_name(env.get("after")) if isinstance(env, dict) else None
            envs[name] = Ref(after, ("environments", name, "after")) if after is not None else None
    return [*graph_findings(jobs, envs), *secrets_in_commands(data)]


def secrets_in_commands(data: Mapping[str, object]) -> list[Finding]:
    """`${{ secrets.X }}` inside a `run:` would paste the value into shell source, where quoting
    and masking can both fail; secrets go through `env:` and are used as `$X`."""
    findings: list[Finding] = []
    raw_jobs = data.get("jobs")
    if not isinstance(raw_jobs, dict):
        return findings
    for name, job in raw_jobs.items():
        if not isinstance(job, dict):
            continue
        places: list[tuple[KeyPath, object]] = [(("jobs", name, "run"), job.get("run"))]
        steps = job.get("steps")
        if isinstance(steps, list):
            places += [
                (("jobs", name, "steps", i, "run"), step.get("run"))
                for i, step in enumerate(steps)
                if isinstance(step, dict)
            ]
        for path, command in places:
            if not isinstance(command, str):
                continue
            for secret in sorted(set(_SECRET.findall(command))):
                findings.append(
                    Finding(
                        path,
                        f"secrets cannot be used inside run: (found secrets.{secret})",
                        f"pass it through env: {{ {secret}: '${{{{ secrets.{secret} }}}}' }}"
                        f" and use ${secret} in the command",
                    )
                )
    return findings


def _as_name(value: object) -> str | None:
    # Mirrors the models' coercion of numbers to strings, so both see the same names.
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _graph(
    nodes: Mapping[str, Sequence[Ref]], kind: str, where: str, cycle_word: str
) -> Iterator[Finding]:
    for refs in nodes.values():
        for ref in refs:
            if ref.name not in nodes:
                plural = "jobs" if kind == "job" else "environments"
                yield Finding(
                    ref.path,
                    f"unknown {kind} '{ref.name}' {where}",
                    suggest(ref.name, nodes, plural),
                )
    edges = {n: [r.name for r in refs if r.name in nodes] for n, refs in nodes.items()}
    order = {name: i for i, name in enumerate(nodes)}
    for component in _strongly_connected(edges):
        start = min(component, key=order.__getitem__)
        if len(component) == 1 and start not in edges[start]:
            continue
        cycle = _cycle_through(start, edges, component)
        ref = next(r for r in nodes[start] if r.name == cycle[1])
        yield Finding(ref.path, f"{cycle_word}: {_show_cycle(cycle, kind)}")


def _show_cycle(cycle: list[str], kind: str) -> str:
    if len(cycle) <= 12:
        return " -> ".join(cycle)
    # One readable line even when a generated file chains hundreds of jobs into a loop.
    return " -> ".join([*cycle[:5], "...", *cycle[-4:]]) + f" ({len(cycle) - 1} {kind}s)"


def _strongly_connected(edges: Mapping[str, Sequence[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative so a long chain of jobs cannot exhaust the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _cycle_through(start: str, edges: Mapping[str, Sequence[str]], within: set[str]) -> list[str]:
    """The shortest cycle from `start` back to itself (breadth-first, edges in file order)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in edges[node]:
            if target not in within:
                continue
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    return [start, start]  # pragma: no cover - a strongly connected component always has one


def stages(needs: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Kahn's algorithm by levels. Names in a cycle (never in a validated pipeline) are left out."""
    remaining = {name: {d for d in deps if d in needs} for name, deps in needs.items()}
    result: list[list[str]] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            break
        result.append(ready)
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return result


def chain_order(after: Mapping[str, str | None]) -> list[str]:
    """Each environment after the one it names; among those ready, file order first."""
    placed: list[str] = []
    pending = list(after)
    while pending:
        ready = next(
            (n for n in pending if after[n] is None or after[n] in placed or after[n] not in after),
            None,
        )
        if ready is None:
            break
        placed.append(ready)
        pending.remove(ready)
    return placed


def secret_names(value: object) -> set[str]:
    """Every NAME in `${{ secrets.NAME }}` in the strings of a nested structure."""
    found: set[str] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found.update(_SECRET.findall(item))
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return found
