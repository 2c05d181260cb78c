"""The project's own tables (Optuna keeps its tables; ours sit beside them in the same database).

Every table is declared on this one MetaData so `coordinator db init` creates them all. The modules
that own a table declare it next to the code that writes it and are listed in TABLE_MODULES.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa

metadata = sa.MetaData()

# Modules that declare tables on `metadata`; imported below so create_all sees every table.
TABLE_MODULES: list[str] = [
    "coordinator.records",
    "coordinator.data.registry",
    "coordinator.lifecycle.ledger",
    "coordinator.baselines",
]

for _module in TABLE_MODULES:
    importlib.import_module(_module)
