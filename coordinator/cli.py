"""`coordinator`: the control-plane CLI. Sub-command groups live next to the code they drive;
this module only assembles them (nothing imports it back: shared pieces are in coordinator.commands.kit).

Global options (`--database-url`, `--version`) go before or after the sub-command. Every user error
ends as one line on stderr and a non-zero exit (see `coordinator.commands.kit.run_app`).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from coordinator.cluster.compose import cluster_app
from coordinator.commands.baselines import baselines_command
from coordinator.commands.dashboard import dashboard_command
from coordinator.commands.data import data_app
from coordinator.commands.db import db_app
from coordinator.commands.evaluate import evaluate_command
from coordinator.commands.export import export_command
from coordinator.commands.kit import GlobalOptionsGroup
from coordinator.commands.local import local_command
from coordinator.commands.predict import predict_command
from coordinator.commands.reports import leaderboard_command, report_command, status_command
from coordinator.commands.studies import create_studies_command, reap_command, search_space_command, study_app
from coordinator.errors import run_app
from coordinator.store import urls
from coordinator.version import code_version

app = typer.Typer(
    name="coordinator",
    cls=GlobalOptionsGroup,
    help="scalesweep control plane: data, studies, progress and reports in PostgreSQL. "
    "Global options (--database-url, --version) may also follow the sub-command.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"scalesweep {code_version()}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        Optional[str],
        typer.Option("--database-url", envvar=urls.ENV_URL, show_envvar=True,
                     help="PostgreSQL URL (postgresql://...); default: the embedded server under $SCALESWEEP_HOME."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = {"database_url": database_url}


app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(cluster_app, name="cluster")
app.command("search-space")(search_space_command)
app.command("baselines")(baselines_command)
app.command("create-studies")(create_studies_command)
app.command("reap")(reap_command)
app.command("local")(local_command)

app.add_typer(study_app, name="study")
app.command("status")(status_command)
app.command("leaderboard")(leaderboard_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("dashboard")(dashboard_command)
app.command("evaluate")(evaluate_command)
app.command("predict")(predict_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one clean line."""
    run_app(app, "coordinator", argv)


if __name__ == "__main__":
    main()
