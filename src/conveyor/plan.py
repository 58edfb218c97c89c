"""What a runner needs to execute one job, as plain data.

A job's plan is stored on its row when the run is created, so whoever executes it (the built-in
runner, or an agent on another machine) needs neither the repository's pipeline file nor the
spec models. Secrets stay as `${{ secrets.NAME }}` references here and are resolved only by the
runner, so they are never written to the store.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Condition = Literal["success", "failure", "always"]


class StepPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    run: str
    shell: Literal["bash", "sh"] = "bash"
    condition: Condition = "success"
    timeout: float = 3600.0
    retries: int = 0
    continue_on_error: bool = False
    env: dict[str, str] = {}
    working_directory: str | None = None


class JobPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    needs: list[str] = []
    condition: Condition = "success"
    steps: list[StepPlan]
    env: dict[str, str] = {}
    artifacts: list[str] = []
    image: str | None = None
    runs_on: list[str] = []
    timeout: float = 3600.0
    continue_on_error: bool = False
    log_limit: int = 64 * 2**20
    job_log_limit: int = 256 * 2**20


class RunContext(BaseModel):
    """The facts about a run that every job of it sees as CONVEYOR_* variables."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    service: str
    sha: str
    ref: str | None
    repository: str
    # The pipeline's `publish.registry`: jobs push their images there (CONVEYOR_REGISTRY).
    registry: str | None = None

    @property
    def branch(self) -> str | None:
        if self.ref and self.ref.startswith("refs/heads/"):
            return self.ref.removeprefix("refs/heads/")
        return self.ref

    def variables(self, job: str) -> dict[str, str]:
        values = {
            "CI": "true",
            "CONVEYOR": "true",
            "CONVEYOR_RUN_ID": str(self.run_id),
            "CONVEYOR_SERVICE": self.service,
            "CONVEYOR_SHA": self.sha,
            "CONVEYOR_SHORT_SHA": self.sha[:12],
            "CONVEYOR_JOB": job,
        }
        if self.ref:
            values["CONVEYOR_REF"] = self.ref
        if self.branch:
            values["CONVEYOR_BRANCH"] = self.branch
        if self.registry:
            values["CONVEYOR_REGISTRY"] = self.registry
        return values
