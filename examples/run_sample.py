"""`make demo` until `conveyor demo` exists: run the sample service's pipeline for real.

Copies examples/hello-service into a fresh git repository, commits it, and runs
`conveyor validate`, `conveyor explain`, `conveyor run`, `conveyor show` and `conveyor logs`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLE = Path(__file__).parent / "hello-service"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sam Sample",
    "GIT_AUTHOR_EMAIL": "sam@example.com",
    "GIT_COMMITTER_NAME": "Sam Sample",
    "GIT_COMMITTER_EMAIL": "sam@example.com",
}


def step(title: str, *argv: str, cwd: Path, env: dict[str, str], check: bool = True) -> None:
    print(f"\n$ {' '.join(argv)}    # {title}", flush=True)
    code = subprocess.run(argv, cwd=cwd, env=env, check=False).returncode
    if check and code != 0:
        sys.exit(code)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-sample-"))
    repo = workdir / "hello"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(GIT_IDENTITY, CONVEYOR_HOME=str(workdir / "conveyor-home"))
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(argv, cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "Hello service"], cwd=repo, env=env, check=True)
    conveyor = [sys.executable, "-m", "conveyor"]
    print(f"sample repository: {repo}\ndata directory:    {workdir / 'conveyor-home'}")
    step("check the pipeline file", *conveyor, "validate", cwd=repo, env=env)
    step("the plan: jobs in stages, environments", *conveyor, "explain", cwd=repo, env=env)
    step("build, test and package the commit", *conveyor, "run", cwd=repo, env=env)
    step("the run's record", *conveyor, "show", "1", cwd=repo, env=env)
    step("its logs", *conveyor, "logs", "1", "test", cwd=repo, env=env)
    print(f"\nDone. Remove {workdir} when you have looked around.")


if __name__ == "__main__":
    main()
