"""The read-only role (`hpo_reader`): what it may read, and nothing else."""

from __future__ import annotations

import contextlib
import os
import time

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine

from coordinator.errors import UserError
from coordinator.store.urls import ENV_URL


READER_ROLE = "hpo_reader"
# Large objects are the one thing any role can create without a privilege on a table or schema.
LARGE_OBJECT_CREATORS = ("lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)", "lo_import(text)", "lo_import(text, oid)")

# What the read-only role may SELECT besides the views: the baselines the report draws.
READER_TABLES = ("baselines",)


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


def create_reader_role(conn: sa.Connection, password: str | None = None) -> str:
    """A login role that can SELECT the read model (the views, the baselines) and nothing else.

    Read-only is a matter of privileges, not of a session default the role could change: no
    table privilege besides SELECT on the read model, no CREATE on the schema, no TEMP on the
    database, no large-object creation (those functions are executable by PUBLIC by default).
    Returns a one-line summary of what was set.
    """
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
    limits = limit_reader(conn, database, superuser)
    return f"role {READER_ROLE}: {limits}; SELECT on {len(views)} views and {', '.join(READER_TABLES)}; no TEMP, no CREATE, {lo_note}; {password_note}"


# The reader's limits, set by `db init` on the role. A role may SET the timeouts for itself (any role
# may, for USERSET settings) and even ALTER ROLE its own defaults, so `enforce_reader_limits` (run by
# every worker's reaper) ends the sessions that go past them anyway. The connection limit and
# temp_file_limit (superuser-only) cannot be changed by the role itself.
READER_STATEMENT_S = 60  # the longest statement of the role
READER_IDLE_S = 60  # the longest a session of the role may sit idle in a transaction
READER_SETTINGS = {
    "statement_timeout": f"{READER_STATEMENT_S}s",
    "idle_in_transaction_session_timeout": f"{READER_IDLE_S}s",
    "lock_timeout": "5s",
    "temp_file_limit": "1GB",
}
SUPERUSER_SETTINGS = ("temp_file_limit",)  # only a superuser may set it, for a role or a session
ENV_READER_CONNECTIONS = "SCALESWEEP_READER_CONNECTIONS"
READER_CONNECTIONS = 10  # sessions of the role at once, across the server (dashboards, reports, psql)
READER_MAX_LOCKS = 500  # more locks than a read of every view takes: a flood of the lock table


def reader_connections() -> int:
    raw = os.environ.get(ENV_READER_CONNECTIONS, str(READER_CONNECTIONS))
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"${ENV_READER_CONNECTIONS} must be a whole number of connections >= 1, got {raw!r}")
    return int(raw)


def alter_role(conn: sa.Connection, statement: str) -> None:
    """One ALTER ROLE, retried when a `db init` of another database updates the same (cluster-wide)
    role at the same instant ("tuple concurrently updated")."""
    for tries in range(5):
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(statement)
            return
        except sa.exc.InternalError:
            if tries == 4:
                raise
            time.sleep(0.05 * (tries + 1))


def limit_reader(conn: sa.Connection, database: str, superuser: bool) -> str:
    """Connection limit and session limits of the reader; its own per-database defaults here undone;
    advisory locks out of its reach (a superuser's `db init` only: those functions are the
    bootstrap superuser's). Returns a summary."""
    current = conn.execute(
        sa.text("SELECT r.rolconnlimit, coalesce(s.setconfig, '{}') AS config FROM pg_roles r "
                "LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = :r"),
        {"r": READER_ROLE},
    ).one()
    connections = reader_connections()
    if current.rolconnlimit != connections:
        alter_role(conn, f"ALTER ROLE {READER_ROLE} CONNECTION LIMIT {connections}")
    set_here = [name for name in READER_SETTINGS if superuser or name not in SUPERUSER_SETTINGS]
    for name in set_here:
        if f"{name}={READER_SETTINGS[name]}" not in current.config:
            alter_role(conn, f"ALTER ROLE {READER_ROLE} SET {name} = '{READER_SETTINGS[name]}'")
    alter_role(conn, f'ALTER ROLE {READER_ROLE} IN DATABASE "{database}" RESET ALL')
    advisory = "advisory locks NOT revoked (needs a superuser's `db init`)"
    if superuser:
        functions = conn.exec_driver_sql(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'pg_catalog' AND p.proname ~ '^pg_(try_)?advisory'"
        ).scalars().all()
        for function in functions:
            conn.exec_driver_sql(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
        advisory = "no advisory locks"
    else:
        with contextlib.suppress(sa.exc.DBAPIError), conn.begin_nested():
            # Lets the service's reapers end reader sessions that break their limits (see enforce_reader_limits).
            conn.exec_driver_sql(f"GRANT {READER_ROLE} TO CURRENT_USER")
    limits = ", ".join(f"{n} {READER_SETTINGS[n]}" for n in set_here)
    return f"at most {connections} connections, {limits}, {advisory}"


READER_SESSIONS = sa.text("""
SELECT a.pid, a.state,
       extract(epoch FROM now() - coalesce(a.query_start, a.backend_start))::int AS running_s,
       extract(epoch FROM now() - a.state_change)::int AS idle_s
FROM pg_stat_activity a
WHERE a.usename = :role AND a.pid <> pg_backend_pid()
""")
LOCK_COUNTS = sa.text("SELECT pid, count(*) AS n FROM pg_locks WHERE pid = ANY(:pids) GROUP BY pid")


def enforce_reader_limits(
    engine: sa.Engine, *, statement_s: int = READER_STATEMENT_S, idle_s: int = READER_IDLE_S, max_locks: int = READER_MAX_LOCKS
) -> list[str]:
    """End the reader's sessions past their limits (a session can lift its own timeouts with SET);
    returns one line per session ended. Needs superuser, membership in the reader role, or
    pg_signal_backend (InsufficientPrivilege otherwise)."""
    with engine.connect() as conn:
        sessions = conn.execute(READER_SESSIONS, {"role": READER_ROLE}).all()
        if not sessions:
            return []
        locks = {r.pid: r.n for r in conn.execute(LOCK_COUNTS, {"pids": [s.pid for s in sessions]})}
        ended = []
        for s in sessions:
            why = None
            if s.state == "active" and s.running_s > statement_s:
                why = f"a statement running for {s.running_s} s (limit {statement_s} s)"
            elif (s.state or "").startswith("idle in transaction") and s.idle_s > idle_s:
                why = f"idle in a transaction for {s.idle_s} s (limit {idle_s} s)"
            elif locks.get(s.pid, 0) > max_locks:
                why = f"{locks[s.pid]} locks held (limit {max_locks})"
            if why and conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": s.pid}).scalar():
                ended.append(f"ended {READER_ROLE} session {s.pid}: {why}")
        conn.commit()
    return ended


BLOCKERS = sa.text("""
SELECT DISTINCT a.pid, a.usename, a.state, extract(epoch FROM now() - a.state_change)::int AS since_s
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.granted AND l.locktype = 'relation' AND n.nspname = 'public'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND (a.state LIKE 'idle in transaction%' OR a.usename = :role)
ORDER BY a.pid
""")


def end_blocking_readers(engine: sa.Engine) -> tuple[int, list[str]]:
    """After DDL timed out on a lock: end the reader's sessions holding locks on our relations.
    Returns how many were ended and a description of the other idle-in-transaction holders."""
    with engine.connect() as conn:
        holders = conn.execute(BLOCKERS, {"role": READER_ROLE}).all()
        ended = 0
        for h in holders:
            if h.usename == READER_ROLE:
                ended += bool(conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": h.pid}).scalar())
        conn.commit()
    others = [f"pid {h.pid} ({h.usename}, {h.state} for {h.since_s} s)" for h in holders if h.usename != READER_ROLE]
    return ended, others
