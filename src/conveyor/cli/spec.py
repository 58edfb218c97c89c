"""`conveyor validate`, `schema`, `explain`: the pipeline file, checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from conveyor.cli.common import repository_root
from conveyor.spec import (
    Pipeline,
    PipelineError,
    explain_pipeline,
    load_pipeline,
    pipeline_json_schema,
)


def _default_path() -> Path:
    root = repository_root(Path.cwd()) or Path.cwd()
    return root / "conveyor.yml"


def _load(path: Path | None) -> Pipeline:
    try:
        return load_pipeline(path or _default_path())
    except PipelineError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
        raise SystemExit(1) from None


path_argument = click.argument(
    "path", required=False, type=click.Path(dir_okay=False, path_type=Path)
)


@click.command()
@path_argument
def validate(path: Path | None) -> None:
    """Check a pipeline file (default: conveyor.yml at the repository's top)."""
    pipeline = _load(path)
    jobs = len(pipeline.jobs)
    envs = len(pipeline.environments)
    click.echo(
        f"{path or _default_path().name} is valid: service {pipeline.service}, "
        f"{jobs} job{'s' if jobs != 1 else ''}, {envs} environment{'s' if envs != 1 else ''}"
    )


@click.command()
@click.option("--markdown", is_flag=True, help="The file reference in Markdown instead.")
def schema(markdown: bool) -> None:
    """Print the JSON Schema of conveyor.yml, for editors (e.g. yaml-language-server)."""
    if markdown:
        from conveyor.spec.reference import pipeline_reference

        click.echo(pipeline_reference(), nl=False)
        return
    click.echo(json.dumps(pipeline_json_schema(), indent=2))


@click.command()
@path_argument
def explain(path: Path | None) -> None:
    """Show the resolved job DAG (in stages) and the environment chain."""
    click.echo(explain_pipeline(_load(path)).rstrip())
