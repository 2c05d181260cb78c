"""Schema migrations of the project's own tables (Alembic; Optuna migrates its own tables itself).

- Revisions live in coordinator/store/migrations/versions/, named `NNNN_what.py` with revision id
  `NNNN_what` and `down_revision` the previous one (0001_initial, 0002_ledger, ...). A new one
  continues the chain: its `down_revision` is the newest one (`head_revision()`). Models (the SQLAlchemy tables)
  stay next to the code that writes them, on coordinator.store.tables.metadata; a revision spells out its
  own DDL so that it never changes after release. tests/test_migrations.py checks that upgrading
  gives exactly the models' schema.
- The version is kept in `scalesweep_alembic_version`, never Optuna's `alembic_version`.
- A database made before migrations existed (it has `study_specs` but no version table) is stamped
  0001_initial first, then upgraded in place.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

VERSION_TABLE = "scalesweep_alembic_version"
FIRST_REVISION = "0001_initial"


def config(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: sa.Connection) -> str:
    """Bring the project's tables to the newest revision on this connection; returns what was done."""
    inspector = sa.inspect(conn)
    before = current_revision(conn)
    if before is None and inspector.has_table("study_specs"):
        command.stamp(config(conn), FIRST_REVISION)  # made by a release before migrations existed
        before = FIRST_REVISION
    command.upgrade(config(conn), "head")
    after = current_revision(conn)
    return f"schema {after}" + (f" (upgraded from {before})" if before is not None and before != after else "")


def head_revision() -> str:
    """The newest revision in versions/ (what `upgrade` brings a database to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(Path(__file__).resolve().parent)).get_current_head()
    assert head is not None, "coordinator/store/migrations/versions/ holds no revision"
    return head


def current_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
