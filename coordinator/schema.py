"""The project's own tables (Optuna keeps its tables; ours sit beside them in the same database).

Every table is declared on this one MetaData, next to the code that writes it (the modules listed in
TABLE_MODULES). `coordinator db init` creates and upgrades them through the migrations in
coordinator/migrations/, and tests/test_migrations.py checks that the migrated schema is exactly
this MetaData.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa

metadata = sa.MetaData()

# Modules that declare tables on `metadata`; imported below so the metadata holds every table.
TABLE_MODULES: list[str] = [
    "coordinator.records",
    "coordinator.data.registry",
    "coordinator.lifecycle.ledger",
    "coordinator.baselines",
    "coordinator.evaluation.tables",
]

for _module in TABLE_MODULES:
    importlib.import_module(_module)
