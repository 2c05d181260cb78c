"""`coordinator db init`: create or upgrade everything, any number of times."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.store import locks, migrations, roles
from coordinator.store.engines import connect, optuna_storage
from coordinator.store.roles import create_reader_role, require_writer
from coordinator.store.urls import ENV_READER_PASSWORD, env_setting


DDL_LOCK_TIMEOUT_S = 10  # the longest one DDL statement of `db init` waits for a lock (then: see init_db)


def init_db(url: str, reader_password: str | None = None, *, lock_timeout_s: int = DDL_LOCK_TIMEOUT_S) -> list[str]:
    """Create or upgrade everything; safe to run any number of times. Returns what it did.

    Optuna creates or checks its own tables; ours are migrated by coordinator.store.migrations (Alembic,
    version table `scalesweep_alembic_version`); the read model (sql/) is rebuilt from scratch.
    `reader_password` (default $SCALESWEEP_READER_PASSWORD) sets the login password of the read-only role,
    so it can connect to servers that ask for one (scram); without it the role keeps its password.

    Concurrent `db init`s queue on a service lock (a row lock the read-only role cannot take). Each
    DDL statement waits at most DDL_LOCK_TIMEOUT_S for its lock: a read-only session in the way (say,
    idle in a transaction after reading a view) is ended and the whole init runs once more; any other
    holder makes it fail with one line naming it.
    """
    reader_password = reader_password or env_setting(ENV_READER_PASSWORD) or None
    engine = connect(url)
    try:
        require_writer(engine, "create or upgrade the schema (`db init`)")
        optuna_storage(url).engine.dispose()  # creating it creates or checks Optuna's tables
        locks.create_table(engine)
        for last in (False, True):
            try:
                return ["optuna schema", *init_schema(engine, reader_password, lock_timeout_s)]
            except sa.exc.OperationalError as exc:
                if not locks.lock_not_available(exc):
                    raise
                ended, others = roles.end_blocking_readers(engine)
                if last or others:
                    held_by = "; ".join(others) or "another session"
                    raise UserError(
                        f"db init waited over {lock_timeout_s} s for a lock held by {held_by}: end it and run db init again"
                    ) from None
    finally:
        engine.dispose()
    raise AssertionError("not reached: each pass returns or raises")


def init_schema(engine: sa.Engine, reader_password: str | None, lock_timeout_s: int) -> list[str]:
    """One transaction: migrations, views, the reader role."""
    done = []
    with engine.begin() as conn:
        locks.hold(conn, "db_init")  # queue behind another `db init` (each is bounded by its lock timeout)
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(lock_timeout_s)}s'")
        done.append(migrations.upgrade(conn))
        drop_views(conn)
        for name, sql in view_files():
            conn.exec_driver_sql(sql)
            done.append(f"sql/{name}")
        done.append(create_reader_role(conn, reader_password))
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
