"""Load and validate `conveyor.yml` into typed models, with errors a person can act on."""

from conveyor.spec.explain import explain_pipeline
from conveyor.spec.load import load_pipeline, parse_pipeline
from conveyor.spec.models import (
    NOTIFY_EVENTS,
    Approval,
    Concurrency,
    Defaults,
    Deploy,
    Environment,
    Health,
    Job,
    Notifier,
    Pipeline,
    PollTrigger,
    PushTrigger,
    Step,
    Triggers,
    VerifyStep,
)
from conveyor.spec.problems import PipelineError, Problem
from conveyor.spec.schema import pipeline_json_schema

__all__ = [
    "NOTIFY_EVENTS",
    "Approval",
    "Concurrency",
    "Defaults",
    "Deploy",
    "Environment",
    "Health",
    "Job",
    "Notifier",
    "Pipeline",
    "PipelineError",
    "PollTrigger",
    "Problem",
    "PushTrigger",
    "Step",
    "Triggers",
    "VerifyStep",
    "explain_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "pipeline_json_schema",
]
