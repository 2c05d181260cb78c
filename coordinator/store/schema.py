"""`coordinator db init`: create or upgrade everything, any number of times."""

from __future__ import annotations

import os
from importlib import resources

import sqlalchemy as sa

from coordinator.store import migrations
from coordinator.store.engines import connect, optuna_storage
from coordinator.store.roles import ENV_READER_PASSWORD, create_reader_role


def init_db(url: str, reader_password: str | None = None) -> list[str]:
    """Create or upgrade everything; safe to run any number of times. Returns what it did.

    Optuna creates or checks its own tables; ours are migrated by coordinator.store.migrations (Alembic,
    version table `scalesweep_alembic_version`); the read model (sql/) is rebuilt from scratch.
    `reader_password` (default $HPO_READER_PASSWORD) sets the login password of the read-only role,
    so it can connect to servers that ask for one (scram); without it the role keeps its password.
    """
    reader_password = reader_password or os.environ.get(ENV_READER_PASSWORD) or None
    done = []
    engine = connect(url)
    try:
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
