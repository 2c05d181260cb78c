"""`coordinator`: the control-plane CLI. Sub-command groups live next to the code they drive.

Every user error ends as one line on stderr and a non-zero exit (see `main`).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Optional

import typer

from coordinator import db
from coordinator.errors import UserError

app = typer.Typer(
    name="coordinator",
    help="scalesweep control plane: data, studies, progress and reports in PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DatabaseUrl = Annotated[
    Optional[str],
    typer.Option("--database-url", help=f"SQLAlchemy URL; default ${db.ENV_URL}, else the embedded PostgreSQL."),
]


@app.callback()
def root(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    ctx.obj = {"database_url": database_url}


def database_url(ctx: typer.Context) -> str:
    """The resolved URL for this invocation (starts the embedded server when needed)."""
    root_ctx = ctx.find_root()
    return db.resolve_url((root_ctx.obj or {}).get("database_url"))


db_app = typer.Typer(help="Database: schema, URL, shell.", no_args_is_help=True)
app.add_typer(db_app, name="db")

from coordinator.data.commands import data_app  # noqa: E402  (defined after database_url, which it uses)

app.add_typer(data_app, name="data")

from coordinator.cluster import cluster_app  # noqa: E402

app.add_typer(cluster_app, name="cluster")

from coordinator.search_space import search_space_command  # noqa: E402

app.command("search-space")(search_space_command)

from coordinator.baselines import baselines_command  # noqa: E402

app.command("baselines")(baselines_command)

from coordinator.local import local_command  # noqa: E402
from coordinator.studies import create_studies_command, reap_command  # noqa: E402

app.command("create-studies")(create_studies_command)
app.command("reap")(reap_command)
app.command("local")(local_command)

from coordinator.study_admin import study_app  # noqa: E402

app.add_typer(study_app, name="study")

from coordinator.reports import leaderboard_command, report_command, status_command  # noqa: E402

app.command("status")(status_command)
app.command("leaderboard")(leaderboard_command)
app.command("report")(report_command)


@db_app.command("init")
def db_init(ctx: typer.Context) -> None:
    """Create or upgrade the Optuna schema, project tables, sql/ views and the read-only role."""
    url = database_url(ctx)
    for step in db.init_db(url):
        typer.echo(f"ok  {step}")
    typer.echo(f"database ready at {db.describe(url)}")


@db_app.command("url")
def db_url(ctx: typer.Context) -> None:
    """Print a URL that psql accepts: psql "$(coordinator db url)"."""
    typer.echo(db.libpq_url(database_url(ctx)))


@db_app.command("shell")
def db_shell(ctx: typer.Context) -> None:
    """Open psql on the database."""
    url = db.libpq_url(database_url(ctx))
    try:
        raise typer.Exit(subprocess.call(["psql", url]))
    except FileNotFoundError:
        raise UserError("psql is not installed (Debian: apt-get install postgresql-client)") from None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one clean line."""
    run_app(app, "coordinator", argv)


def run_app(typer_app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a Typer app with one-line user errors; shared by the `coordinator` and `worker` entry points."""
    command = typer.main.get_command(typer_app)
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # bad flags, missing arguments
        print(f"error: {exc.format_message()} (see `{prog_name} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
