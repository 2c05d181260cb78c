"""Service locks: row locks on `service_locks`, a table only the service may write.

The service serialises a few rare steps: `db init`, GPU lease changes, dataset and evaluation
protocol registration. PostgreSQL's advisory locks would do, but their keys are one space shared by
every role that can connect: the read-only role could hold a key (and stall every worker waiting on
it) or fill the lock table with them. A row lock needs UPDATE on its table; the read-only role has no
privilege on `service_locks`, so it can neither take nor hold one of these locks.

    with engine.begin() as conn:
        hold(conn, "device_leases")            # until this transaction ends
        hold(conn, "device_leases", wait_ms=2000)  # LockNotAvailable after 2 s (a stop flag is checked)

The table is created by `db init` before the migrations (it serialises them), never by a migration.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from coordinator.store.tables import service_locks

# INSERT first: the first user of a name creates its row (two first users queue on the new row's
# key), then the row lock; the row is never updated, so a lock leaves no dead tuples behind.
ADD = sa.text("INSERT INTO service_locks (name) VALUES (:name) ON CONFLICT (name) DO NOTHING")
LOCK = sa.text("SELECT name FROM service_locks WHERE name = :name FOR UPDATE")


def hold(conn: sa.Connection, name: str, *, wait_ms: int | None = None) -> None:
    """Take the service lock `name` until the transaction ends; with `wait_ms`, wait at most that long
    (then psycopg.errors.LockNotAvailable, wrapped by SQLAlchemy: see `lock_not_available`)."""
    if wait_ms is not None:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{int(wait_ms)}ms'"))
    conn.execute(ADD, {"name": name})
    conn.execute(LOCK, {"name": name})
    if wait_ms is not None:
        conn.execute(sa.text("SET LOCAL lock_timeout = DEFAULT"))


def create_table(engine: sa.Engine) -> None:
    """`service_locks`, if missing (two first `db init`s may race to create it: the loser finds it)."""
    for _ in range(3):
        try:
            with engine.begin() as conn:
                service_locks.create(conn, checkfirst=True)
            return
        except sa.exc.IntegrityError:  # pg_type's unique index: the other one created it just now
            continue


def lock_not_available(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "orig", None), psycopg.errors.LockNotAvailable)
