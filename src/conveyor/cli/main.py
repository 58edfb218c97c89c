"""The `conveyor` command. Subcommands are imported only when called: start-up time is part of
every pipeline's feedback loop, and most commands need a fraction of the package."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from conveyor import __version__
from conveyor.errors import ConveyorError

# name -> (module, attribute, one-line help shown by `conveyor --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("conveyor.cli.demo", "demo", "Commit to production, the whole story, here."),
    "init": ("conveyor.cli.init", "init", "Write a starter conveyor.yml for this repository."),
    "validate": ("conveyor.cli.spec", "validate", "Check a pipeline file; exit 1 on errors."),
    "schema": ("conveyor.cli.spec", "schema", "Print the JSON Schema of conveyor.yml."),
    "explain": ("conveyor.cli.spec", "explain", "Show the resolved job DAG and environments."),
    "run": ("conveyor.cli.run", "run", "Run the pipeline for a commit."),
    "runs": ("conveyor.cli.runs", "runs", "List recent runs."),
    "show": ("conveyor.cli.runs", "show", "Show one run: jobs, steps, artifacts."),
    "logs": ("conveyor.cli.runs", "logs", "Print (or follow) the logs of a run or job."),
    "cancel": ("conveyor.cli.runs", "cancel", "Cancel a queued or running run."),
    "rerun": ("conveyor.cli.runs", "rerun", "Run a finished run again (all or failed jobs)."),
    "watch": ("conveyor.cli.watch", "watch", "Follow a run and its release to production, live."),
    "releases": ("conveyor.cli.releases", "releases", "List releases (successful runs)."),
    "release": ("conveyor.cli.releases", "release", "Show one release and its evidence."),
    "db": ("conveyor.cli.db", "db", "Database: upgrade, revision, DORA backfill, prune."),
    "server": ("conveyor.cli.server", "server", "Serve the API, webhooks and runners."),
    "edge": ("conveyor.cli.edge", "edge", "The process holding the stable ports: run, status."),
    "token": ("conveyor.cli.admin", "token", "API tokens: create, list, revoke."),
    "service": ("conveyor.cli.admin", "service", "Services the server builds."),
    "secret": ("conveyor.cli.secret", "secret", "Secrets of a service: set, list, rm, import."),
    "runner": ("conveyor.cli.runner", "runner", "Run jobs for a server (a runner agent)."),
    "hook": ("conveyor.cli.hook", "hook", "Git hooks that hand changes to the server."),
    "envs": ("conveyor.cli.delivery", "envs", "What runs where: environments and their queues."),
    "deployments": ("conveyor.cli.delivery", "deployments", "List deployments."),
    "deployment": ("conveyor.cli.delivery", "deployment", "Show one deployment and its log."),
    "promote": ("conveyor.cli.delivery", "promote", "Queue a release for an environment."),
    "rollback": ("conveyor.cli.delivery", "rollback", "Put an environment back on a release."),
    "hold": ("conveyor.cli.delivery", "hold", "Stop promotions into an environment."),
    "unhold": ("conveyor.cli.delivery", "unhold", "Let promotions into an environment move."),
    "approvals": ("conveyor.cli.delivery", "approvals", "Approvals waiting for a decision."),
    "approve": ("conveyor.cli.delivery", "approve", "Approve a deployment."),
    "reject": ("conveyor.cli.delivery", "reject", "Reject a deployment, with a reason."),
    "incidents": ("conveyor.cli.delivery", "incidents", "Production incidents."),
    "audit": ("conveyor.cli.delivery", "audit", "The audit log of decisions."),
    "user": ("conveyor.cli.delivery", "user", "People who approve (add, list)."),
    "dora": ("conveyor.cli.dora", "dora", "The five DORA metrics, explained."),
    "team": ("conveyor.cli.teams", "team", "Teams: groups of services, for DORA side by side."),
    "incident": ("conveyor.cli.incidents", "incident", "Incidents: open, resolve, list."),
    "import": ("conveyor.cli.imports", "import_history", "Import deployment/incident history."),
    "connectors": (
        "conveyor.cli.connectors",
        "connectors",
        "Pull deployments/incidents from other tools: list, sync, secret.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry[0]), entry[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="conveyor")
def cli() -> None:
    """Conveyor carries every commit to production and measures the flow."""


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except ConveyorError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)


def report_error(exc: ConveyorError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)
