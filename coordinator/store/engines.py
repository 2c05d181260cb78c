"""Connecting: which database (`resolve_url`), small self-healing pools, Optuna's storage on the
same database, and scratch databases for tests and benchmarks.

URL resolution order: `--database-url`, then `HPO_DATABASE_URL`, then the embedded PostgreSQL
(coordinator.store.embedded).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from coordinator.errors import UserError, first_line
from coordinator.store.embedded import embedded_url
from coordinator.store.urls import ENV_URL, describe, normalise_url, redact


def resolve_url(cli_url: str | None = None) -> str:
    """The SQLAlchemy URL to use (psycopg 3 driver), starting the embedded server if needed."""
    raw = cli_url or os.environ.get(ENV_URL)
    if not raw:
        return embedded_url()
    return normalise_url(raw)


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


def read_rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of the read model as dicts; a database without the views gets a one-line hint instead
    of a traceback."""
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
    except sa.exc.ProgrammingError as exc:
        if "does not exist" in str(exc):
            raise UserError(f"the database has no read model ({first_line(exc)}): run `coordinator db init`") from None
        raise


def optuna_storage(url: str, **kwargs: object) -> optuna.storages.RDBStorage:  # noqa: F821
    """Optuna's RDB storage on the same database, with the same small, self-healing pool."""
    engine_kwargs = {"pool_size": 2, "max_overflow": 1, "pool_pre_ping": True, "pool_recycle": 1800, "connect_args": dict(CONNECT_ARGS)}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)  # type: ignore[arg-type]
