"""CLI start-up: how long a fresh `conveyor` process takes, from spawn to exit, for the commands
people type most, beside a plain click CLI on the same Python (the floor any click CLI pays).

Figures are medians (and minimums) of REPEATS fresh processes each, the commands interleaved so
that load on the machine falls on all of them alike:
- `conveyor --help`;
- `conveyor runs` against the local store (created before, so no migration is timed);
- `conveyor runs` against a real `conveyor server` on 127.0.0.1 (CONVEYOR_URL, CONVEYOR_TOKEN):
  the request and the server's answer are part of it;
- a five-line click app's `--help`.
Targets (issue 16): ≤ 150 ms against a server, ≤ 300 ms locally. Which modules each command
imports is a test (tests/cli/test_cli_startup.py); how long it takes is measured here.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchserver import Server

REPEATS = 21
PLAIN_CLICK = """\
import click
@click.command()
@click.option("--name", default="world")
def hello(name: str) -> None:
    click.echo(f"hello {name}")
hello()
"""


def _cpu_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU time (user + system) of one process, in ms. The CPU time is what the
    process itself used: on a shared machine, its wall time also counts the other work."""
    cpu, started = _cpu_of_children(), time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000, (_cpu_of_children() - cpu) * 1000


def _figures(samples: list[tuple[float, float]]) -> dict[str, float]:
    wall = [w for w, _ in samples]
    return {
        "median_ms": round(statistics.median(wall), 1),
        "min_ms": round(min(wall), 1),
        "cpu_median_ms": round(statistics.median(c for _, c in samples), 1),
    }


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-cli-") as tmp:
        root = Path(tmp)
        plain = root / "plain_click.py"
        plain.write_text(PLAIN_CLICK)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        local = env | {"CONVEYOR_HOME": str(root / "home")}
        conveyor = [sys.executable, "-m", "conveyor"]
        subprocess.run([*conveyor, "runs"], env=local, cwd=root, check=True, capture_output=True)
        server = Server(root / "server-home", runners=0)
        token = server.token("bench", "read")
        server.start()
        try:
            remote = env | {"CONVEYOR_URL": server.url, "CONVEYOR_TOKEN": token}
            commands: dict[str, tuple[list[str], dict[str, str]]] = {
                "plain_click_help": ([sys.executable, str(plain), "--help"], env),
                "help": ([*conveyor, "--help"], env),
                "runs_local": ([*conveyor, "runs"], local),
                "runs_server": ([*conveyor, "runs"], remote),
            }
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for argv, run_env in commands.values():
                _once(argv, run_env, root)  # warm-up: the files in the page cache
            for _ in range(repeats):
                for name, (argv, run_env) in commands.items():
                    samples[name].append(_once(argv, run_env, root))
        finally:
            server.stop()
    return {
        "repeats": repeats,
        "load_average_at_start": load,
        **{name: _figures(values) for name, values in samples.items()},
    }


def section(r: dict[str, Any]) -> str:
    floor = r["plain_click_help"]["median_ms"]

    def row(what: str, key: str, target: str) -> str:
        ms, cpu = r[key]["median_ms"], r[key].get("cpu_median_ms", "—")
        return (
            f"| {what} | **{ms}** / {r[key]['min_ms']} ms | {cpu} ms | {ms / floor:.1f}× "
            f"| {target} |"
        )

    return f"""## CLI start-up (targets: ≤ 150 ms against a server, ≤ 300 ms locally)

A fresh process for each command, from spawn to exit, median / minimum of {r["repeats"]} each,
the commands interleaved; load average (1 min) at the start: {r["load_average_at_start"]} on \
{os.cpu_count()} cores.
Load slows every process alike: on a busy machine the ratio to the plain click app and the CPU
time (user + system, of the command's process alone) say more than the wall milliseconds.

| command | median / min | CPU, median | ÷ plain click | target |
|---|---|---|---|---|
{row("`conveyor runs` against a server (CONVEYOR_URL, on 127.0.0.1)", "runs_server", "≤ 150 ms")}
{row("`conveyor runs`, local store", "runs_local", "≤ 300 ms")}
{row("`conveyor --help`", "help", "—")}
{row("a five-line click app, `--help`", "plain_click_help", "the floor")}

A command imports its own module only when it is called (`conveyor.cli.main.LazyGroup`); a
command that asks a server imports neither the store, SQLAlchemy, the engine, pydantic
(`conveyor.settings` is a dataclass) nor httpx (the CLI speaks HTTP through urllib), and a
local listing imports the store but not the engine (tests/cli/test_cli_startup.py; an import
contract keeps `conveyor.cli.main` and the settings light). What is left against a server is
click, the standard library's HTTP client and the request; locally, importing SQLAlchemy,
building the ORM models (their PostgreSQL partial index loads that dialect too) and
configuring their mappers for the first query.
"""


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
