"""`coordinator dashboard`: optuna-dashboard on 127.0.0.1 against this project's database.

Same URL resolution as every command (so the embedded server works too). Bound to 127.0.0.1: the
dashboard can change studies (notes, trial states), so it is not exposed on the network; reach it
from elsewhere through an SSH tunnel. Needs the `dashboard` extra.
"""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.commands.kit import database_url
from coordinator.errors import UserError, require_extra
from coordinator.store import engines, urls

HOST = "127.0.0.1"


def dashboard_command(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port on 127.0.0.1.")] = 8080,
) -> None:
    """Open optuna-dashboard on http://127.0.0.1:PORT for this database (Ctrl-C stops it)."""
    require_extra("optuna_dashboard", "dashboard", "`coordinator dashboard`")
    from optuna_dashboard import run_server

    url = database_url(ctx)
    engines.connect(url).dispose()  # unreachable: one line now, not a traceback from the dashboard
    typer.echo(f"optuna-dashboard on http://{HOST}:{port} for {urls.describe(url)} (Ctrl-C stops it)", err=True)
    storage = engines.optuna_storage(url, skip_table_creation=True)
    try:
        run_server(storage, host=HOST, port=port)
    except OSError as exc:  # port in use
        raise UserError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}") from None
