"""Changing a study after creation (`coordinator study extend|cancel`), recorded as an amendment.

A study's spec never changes. Extending adds search slots (the target grows) and cancelling takes
its waiting slots out of the target (running trials finish; every trial stays queryable); both
write a `study_amendments` row with the time, which `study_progress` and `trial_results` reflect.
"""

from __future__ import annotations

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.lifecycle import ledger
from coordinator.store import engines, tables


def locked_study(conn: sa.Connection, name: str) -> None:
    """The study's row lock (the claims' lock): no claim of it runs while its slots change."""
    t = tables.study_specs
    if conn.execute(sa.select(t.c.study_name).where(t.c.study_name == name).with_for_update(key_share=True)).first() is None:
        raise UserError(f"no study named {name!r} (see `coordinator status`)")


def extend(url: str, name: str, trials: int) -> tuple[int, int]:
    """Raise the study's target to `trials`; returns (old target, slots added)."""
    engine = engines.connect(url)
    try:
        with engine.begin() as conn:
            locked_study(conn, name)
            current = ledger.slot_count(conn, ledger.SEARCH, name)
            if trials <= current:
                raise UserError(f"study {name} already has a target of {current} trials: --trials must be larger to extend it")
            added = ledger.extend_search(conn, name, trials)
    finally:
        engine.dispose()
    return current, added


def cancel(url: str, name: str) -> int:
    engine = engines.connect(url)
    try:
        with engine.begin() as conn:
            locked_study(conn, name)
            return ledger.cancel_study(conn, name)
    finally:
        engine.dispose()
