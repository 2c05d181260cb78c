"""`coordinator db ...`: schema, URL, psql, and the embedded server's lifecycle."""

from __future__ import annotations

import subprocess
from typing import Annotated, Optional

import typer

from coordinator import db
from coordinator.app import database_url
from coordinator.errors import UserError

db_app = typer.Typer(help="Database: schema, URL, shell, the embedded server.", no_args_is_help=True)


@db_app.command("init")
def db_init(
    ctx: typer.Context,
    reader_password: Annotated[
        Optional[str],
        typer.Option("--reader-password", envvar=db.ENV_READER_PASSWORD, show_envvar=True,
                     help=f"Set the login password of the read-only role {db.READER_ROLE} (for password-auth servers)."),
    ] = None,
) -> None:
    """Create or upgrade the Optuna schema, project tables, sql/ views and the read-only role."""
    if reader_password is not None and not reader_password:
        raise UserError("--reader-password must not be empty")
    url = database_url(ctx)
    steps = db.init_db(url, reader_password)
    for step in steps:
        typer.echo(f"ok  {step}")
    typer.echo(f"database ready at {db.describe(url)}")


@db_app.command("url")
def db_url(ctx: typer.Context) -> None:
    """Print a URL that psql accepts: psql "$(coordinator db url)"."""
    typer.echo(db.libpq_url(database_url(ctx)))


@db_app.command("shell", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_shell(
    ctx: typer.Context,
    psql_args: Annotated[Optional[list[str]], typer.Argument(help="Passed to psql after `--`, e.g. -- -c 'select 1'.")] = None,
) -> None:
    """Open psql on the database; `coordinator db shell -- -Atc 'select ...'` passes the rest to psql."""
    url = db.libpq_url(database_url(ctx))
    try:
        raise typer.Exit(subprocess.call(["psql", url, *(psql_args or []), *ctx.args]))
    except FileNotFoundError:
        raise UserError("psql is not installed (Debian: apt-get install postgresql-client)") from None


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (under $SCALESWEEP_HOME/pg) if it is not running."""
    was_running = db.embedded_running()
    url = db.embedded_url()
    typer.echo(f"embedded PostgreSQL {'already running' if was_running else 'started'} at {db.describe(url)} ({db.embedded_pgdata()})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL; its data stays (`db start` or any command starts it again)."""
    if db.stop_embedded():
        typer.echo(f"embedded PostgreSQL stopped ({db.embedded_pgdata()})")
    else:
        typer.echo(f"embedded PostgreSQL not running ({db.embedded_pgdata()})")
