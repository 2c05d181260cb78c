"""The read-only role (`hpo_reader`): what it may read, and nothing else."""

from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql

READER_ROLE = "hpo_reader"
ENV_READER_PASSWORD = "HPO_READER_PASSWORD"
# Large objects are the one thing any role can create without a privilege on a table or schema.
LARGE_OBJECT_CREATORS = ("lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)", "lo_import(text)", "lo_import(text, oid)")

# What the read-only role may SELECT besides the views: the baselines the report draws.
READER_TABLES = ("baselines",)


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
    return f"role {READER_ROLE}: SELECT on {len(views)} views and {', '.join(READER_TABLES)}; no TEMP, no CREATE, {lo_note}; {password_note}"
