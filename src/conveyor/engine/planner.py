"""Turn a validated pipeline into the job plans a run records."""

from __future__ import annotations

from conveyor.plan import JobPlan, StepPlan
from conveyor.spec import Pipeline


def plan_jobs(pipeline: Pipeline) -> list[JobPlan]:
    """Job plans in topological order, with the file's defaults filled in."""
    defaults = pipeline.defaults
    plans: list[JobPlan] = []
    for stage in pipeline.job_order():
        for name in stage:
            job = pipeline.jobs[name]
            job_shell = job.shell or defaults.shell
            job_retries = job.retries if job.retries is not None else defaults.retries
            job_timeout = job.timeout or defaults.timeout
            steps = [
                StepPlan(
                    name=step.name or f"step {i + 1}",
                    run=step.run,
                    shell=step.shell or job_shell,
                    condition=step.if_,
                    timeout=step.timeout or job_timeout,
                    retries=step.retries if step.retries is not None else job_retries,
                    continue_on_error=step.continue_on_error,
                    env=dict(step.env),
                    working_directory=step.working_directory or job.working_directory,
                )
                for i, step in enumerate(job.resolved_steps(name))
            ]
            plans.append(
                JobPlan(
                    name=name,
                    needs=list(job.needs),
                    condition=job.if_,
                    steps=steps,
                    env=dict(job.env),
                    artifacts=list(job.artifacts),
                    image=job.image,
                    runs_on=list(job.runs_on),
                    timeout=job_timeout,
                    continue_on_error=job.continue_on_error,
                    log_limit=defaults.log_limit,
                    job_log_limit=defaults.job_log_limit,
                )
            )
    return plans
