"""Finishing an attempt: the ledger, its `trial_records` row and Optuna agree, in that order.

    BEGIN
      attempt RUNNING -> COMPLETE | PRUNED | FAIL (only if still RUNNING), item finished or re-queued
      trial_records row (search), from the attempt's own provenance
    COMMIT
    Optuna tell (the reaper repeats it if we die in between: Optuna follows the ledger)

An attempt that was reaped while it ran (lost, stalled, timed out) is no longer RUNNING: its late
result is stored in `attempts.late_result` and counted nowhere, with one log line.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator.lifecycle import optuna_adapter
from coordinator.lifecycle.ledger import SEARCH
from coordinator.lifecycle.queries import query
from coordinator.store import tables
from coordinator.store.tables import attempts

log = logging.getLogger("scalesweep")

RECORD_COLUMNS = [c.name for c in tables.trial_records.columns if c.name not in ("metrics", "recorded_at")]


@dataclass(frozen=True)
class Finished:
    """What `finish` did: `counted` False means the attempt had been reaped (a late result)."""

    counted: bool
    retried: bool = False


def finish(
    engine: sa.Engine,
    attempt_id: int,
    state: str,
    *,
    value: float | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    retry: bool = False,
) -> tuple[Finished, sa.Row | None]:
    """Finish a RUNNING attempt (FAIL with `retry` re-queues its item with the same parameters)."""
    details = dict(details or {})
    with engine.begin() as conn:
        row = conn.execute(
            query("finish_attempt"),
            {"attempt_id": attempt_id, "state": state, "reason": reason, "value": finite(value), "retry": retry},
        ).first()
        if row is None:
            late = {"state": state, "value": finite(value), "reason": reason, "details": json_safe(details)}
            conn.execute(attempts.update().where(attempts.c.attempt_id == attempt_id).values(late_result=late))
            return Finished(counted=False), None
        if row.kind == SEARCH and row.trial_id is not None:
            write_record(conn, final_record(row, state, reason, details))
    return Finished(counted=True, retried=retry), row


def tell_optuna(storage: optuna_adapter.Storage, study: Any, row: sa.Row, state: str, value: float | None, trial: Any = None) -> None:
    """Tell Optuna what the ledger says; an already finished trial is left as it is."""
    if row.trial_number is None:
        return
    if study is None:
        optuna_adapter.tell_by_name(storage, row.study_name, row.trial_number, state, value)
    else:
        optuna_adapter.tell(study, trial if trial is not None else row.trial_number, state, value)


def final_record(attempt: sa.Row, state: str, reason: str | None, details: Mapping[str, Any]) -> dict[str, Any]:
    """A `trial_records` row: known keys of `details` become typed columns; all of it goes in `metrics`.

    Provenance (worker, host, device, code version) and the architecture come from the attempt,
    written at its claim, so even an attempt whose worker vanished says who ran what.
    """
    arch = dict(attempt.architecture or {})
    flat = {
        "worker": attempt.worker,
        "host": attempt.host,
        "device": attempt.device,
        "code_version": attempt.code_version,
        "n_params": attempt.n_params,
        **{k: arch.get(k) for k in ("d_model", "n_layers", "n_heads", "d_ff")},
        **{k: v for k, v in details.items() if v is not None},
    }
    row = {name: json_safe(flat.get(name)) for name in RECORD_COLUMNS}
    row.update(trial_id=attempt.trial_id, study_name=attempt.study_name, trial_number=attempt.trial_number, state=state, reason=reason)
    row["metrics"] = json_safe({**details, "sampler_seed": attempt.sampler_seed, "attempt": attempt.attempt, "synthetic": attempt.synthetic})
    return row


def write_record(conn: sa.Connection, row: Mapping[str, Any]) -> None:
    """Insert or replace a trial's record (an attempt's record is written once, when it finishes)."""
    stmt = insert(tables.trial_records).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["trial_id"],
        set_={k: stmt.excluded[k] for k in row if k != "trial_id"} | {"recorded_at": sa.func.now()},
    )
    conn.execute(stmt)


def write_epoch(engine: sa.Engine, trial_id: int, epoch: Mapping[str, Any]) -> None:
    columns = [c.name for c in tables.trial_epochs.columns if c.name not in ("trial_id", "recorded_at")]
    values = {k: json_safe(epoch.get(k)) for k in columns}
    stmt = insert(tables.trial_epochs).values(trial_id=trial_id, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["trial_id", "epoch"], set_={k: stmt.excluded[k] for k in values})
    with engine.begin() as conn:
        conn.execute(stmt)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """NaN/inf become NULL (JSON and honest reporting both refuse them); numpy scalars become Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.loads(json.dumps(value, default=str))
