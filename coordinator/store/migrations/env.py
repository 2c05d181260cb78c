"""Alembic's entry point: run the revisions on the connection coordinator.store.migrations.upgrade gives."""

from __future__ import annotations

from alembic import context

from coordinator.store import tables
from coordinator.store.migrations import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=tables.metadata,
    version_table=VERSION_TABLE,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
