"""Engine overhead per step: a 50-job pipeline of one `true` step each, against the same 50
commands in a bash script, on the same machine in the same run.

Figures (medians of REPEATS runs, each `conveyor run -j 1` a fresh process, as a person runs it):
- per step: the slope between a 10-job and a 50-job pipeline, minus the same slope for bash.
  This is what each further step costs: the engine's overhead per step.
- start-up: what a run costs before its first step (process start, imports, store, git, plan),
  the intercept of the same line. Paid once per run, not per step.
- whole command, 50 jobs: (conveyor wall time - bash wall time) / 50, start-up included.
The bash script's `true` is a builtin; each Conveyor step spawns `bash -c true`. The spawned-shell
baseline (`bash -c true` 50 times) shows how much of a step is that spawn alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (10, 50)
REPEATS = 11
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _repo(root: Path, jobs: int, env: dict[str, str]) -> Path:
    repo = root / f"repo{jobs}"
    repo.mkdir()
    body = "".join(f'  job{i:02d}:\n    run: "true"\n' for i in range(jobs))
    (repo / "conveyor.yml").write_text(f"service: bench{jobs}\njobs:\n{body}")
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "bench"],
    ):
        subprocess.run(argv, cwd=repo, env=env, check=True)
    (root / f"builtin{jobs}.sh").write_text("\n".join(["true"] * jobs) + "\n")
    (root / f"spawned{jobs}.sh").write_text("\n".join(["bash -c true"] * jobs) + "\n")
    return repo


def measure() -> dict[str, Any]:
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(GIT_IDENTITY, CONVEYOR_HOME=str(root / "home"))
        conveyor = [sys.executable, "-m", "conveyor", "run", "-j", "1"]
        times: dict[str, dict[int, float]] = {"conveyor": {}, "builtin": {}, "spawned": {}}
        for jobs in SIZES:
            repo = _repo(root, jobs, env)
            _timed(conveyor, repo, env)  # warm-up: creates the store, fills caches
            samples: dict[str, list[float]] = {k: [] for k in times}
            for _ in range(REPEATS):
                samples["builtin"].append(
                    _timed(["bash", str(root / f"builtin{jobs}.sh")], repo, env)
                )
                samples["spawned"].append(
                    _timed(["bash", str(root / f"spawned{jobs}.sh")], repo, env)
                )
                samples["conveyor"].append(_timed(conveyor, repo, env))
            for key, values in samples.items():
                times[key][jobs] = med(values)
    small, large = SIZES
    span = large - small

    def slope(key: str) -> float:
        return (times[key][large] - times[key][small]) / span

    per_step = slope("conveyor") - slope("builtin")
    startup = times["conveyor"][small] - small * slope("conveyor")
    return {
        "repeats": REPEATS,
        "wall_s": {k: {str(n): round(t, 4) for n, t in v.items()} for k, v in times.items()},
        "per_step_overhead_ms": round(per_step * 1000, 2),
        "per_step_beyond_spawning_a_shell_ms": round(
            (slope("conveyor") - slope("spawned")) * 1000, 2
        ),
        "startup_per_run_ms": round(startup * 1000, 1),
        "whole_command_50_jobs_ms_per_step": round(
            (times["conveyor"][large] - times["builtin"][large]) / large * 1000, 2
        ),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
