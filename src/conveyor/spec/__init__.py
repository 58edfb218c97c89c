"""Load and validate `conveyor.yml` into typed models, with errors a person can act on."""

from conveyor.spec.explain import explain_pipeline
from conveyor.spec.load import load_pipeline, parse_pipeline
from conveyor.spec.models import (
    NOTIFY_EVENTS,
    Approval,
    CommandCheck,
    Concurrency,
    Defaults,
    Deploy,
    EmailNotifier,
    Environment,
    Health,
    HttpCheck,
    Job,
    Notifier,
    Pipeline,
    PollTrigger,
    PrometheusCheck,
    PushTrigger,
    SlackNotifier,
    Step,
    Triggers,
    VerifyStep,
    WebhookNotifier,
)
from conveyor.spec.problems import PipelineError, Problem
from conveyor.spec.schema import pipeline_json_schema

__all__ = [
    "NOTIFY_EVENTS",
    "Approval",
    "CommandCheck",
    "Concurrency",
    "Defaults",
    "Deploy",
    "EmailNotifier",
    "Environment",
    "Health",
    "HttpCheck",
    "Job",
    "Notifier",
    "Pipeline",
    "PipelineError",
    "PollTrigger",
    "Problem",
    "PrometheusCheck",
    "PushTrigger",
    "SlackNotifier",
    "Step",
    "Triggers",
    "VerifyStep",
    "WebhookNotifier",
    "explain_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "pipeline_json_schema",
]
