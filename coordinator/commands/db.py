"""`coordinator db ...`: schema, URL, psql, and the embedded server's lifecycle."""

from __future__ import annotations

import subprocess
from typing import Annotated, Optional

import typer

from coordinator.commands.kit import database_url
from coordinator.errors import UserError
from coordinator.store import embedded, roles, schema, urls

db_app = typer.Typer(help="Database: schema, URL, shell, the embedded server.", no_args_is_help=True)


@db_app.command("init")
def db_init(
    ctx: typer.Context,
    reader_password: Annotated[
        Optional[str],
        typer.Option("--reader-password", envvar=roles.ENV_READER_PASSWORD, show_envvar=True,
                     help=f"Set the login password of the read-only role {roles.READER_ROLE} (for password-auth servers)."),
    ] = None,
) -> None:
    """Create or upgrade the Optuna schema, project tables, sql/ views and the read-only role."""
    if reader_password is not None and not reader_password:
        raise UserError("--reader-password must not be empty")
    url = database_url(ctx)
    steps = schema.init_db(url, reader_password)
    for step in steps:
        typer.echo(f"ok  {step}")
    typer.echo(f"database ready at {urls.describe(url)}")


@db_app.command("url")
def db_url(ctx: typer.Context) -> None:
    """Print a URL that psql accepts: psql "$(coordinator db url)"."""
    typer.echo(urls.libpq_url(database_url(ctx)))


@db_app.command("shell", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_shell(
    ctx: typer.Context,
    psql_args: Annotated[Optional[list[str]], typer.Argument(help="Passed to psql after `--`, e.g. -- -c 'select 1'.")] = None,
) -> None:
    """Open psql on the database; `coordinator db shell -- -Atc 'select ...'` passes the rest to psql."""
    url = urls.libpq_url(database_url(ctx))
    try:
        raise typer.Exit(subprocess.call(["psql", url, *(psql_args or []), *ctx.args]))
    except FileNotFoundError:
        raise UserError("psql is not installed (Debian: apt-get install postgresql-client)") from None


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (under $SCALESWEEP_HOME/pg) if it is not running."""
    was_running = embedded.embedded_running()
    embedded.embedded_url()
    typer.echo(f"embedded PostgreSQL {'already running' if was_running else 'started'} in {embedded.embedded_pgdata()}; `coordinator db url` prints its URL")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL; its data stays (`db start` or any command starts it again)."""
    if embedded.stop_embedded():
        typer.echo(f"embedded PostgreSQL stopped ({embedded.embedded_pgdata()})")
    else:
        typer.echo(f"embedded PostgreSQL not running ({embedded.embedded_pgdata()})")
