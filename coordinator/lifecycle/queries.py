"""Named SQL queries of the ledger, read from sql/queries/NAME.sql (one definition each)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import sqlalchemy as sa


@cache
def query(name: str) -> sa.TextClause:
    return sa.text(resources.files("sql").joinpath("queries", f"{name}.sql").read_text())
