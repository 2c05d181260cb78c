"""The ledger's tables and the one way work enters it.

- `work_items`: one row per slot that counts towards a target, created before anyone works on it.
  kind `search` (an Optuna trial of a study; a study registers one per slot of its target) or any
  other kind a module registers (e.g. `evaluation`), keyed by (kind, study_name, slot).
  state: waiting -> running -> finished (outcome COMPLETE | PRUNED | FAIL), or back to waiting for
  a retry; `cancelled` items no longer count.
- `attempts`: one row per claim of an item: who ran it where, its Optuna trial number (search
  only), state RUNNING -> COMPLETE | PRUNED | FAIL with a reason, and every time stamp from the
  database clock (claimed, heartbeat, last progress, finished).
- `study_amendments`: every change of a study after creation (extend, cancel), with its time.
- `device_leases`: GPU leases (the logic is worker/leases.py's).

API for other kinds of work (stable; see also coordinator.lifecycle.claims):

    enqueue_items(conn, kind, study_name, payloads) -> int   # slots 1..n; idempotent; returns new rows

An executor registered for the kind (worker/executors.py) receives the claimed item (item_id,
attempt_id, payload) and stores its own results keyed by those ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator.store.tables import study_amendments, work_items

SEARCH = "search"  # the kind of an Optuna trial of a study
EVALUATION = "evaluation"  # the kind of a final-evaluation run (coordinator evaluate)
ENQUEUE_BATCH = 5000  # rows per INSERT


def enqueue_items(conn: sa.Connection, kind: str, study_name: str, payloads: Sequence[Mapping[str, Any]], first_slot: int = 1) -> int:
    """Items `first_slot`, `first_slot + 1`, ... of (kind, study) with these payloads; returns how many were new.

    Idempotent: a slot that exists already is left as it is, so running the same call twice (or two
    processes racing) creates each item once.
    """
    rows = [{"kind": kind, "study_name": study_name, "slot": first_slot + i, "payload": dict(p)} for i, p in enumerate(payloads)]
    added = 0
    for start in range(0, len(rows), ENQUEUE_BATCH):  # a statement carries at most 65535 parameters
        stmt = insert(work_items).values(rows[start : start + ENQUEUE_BATCH])
        stmt = stmt.on_conflict_do_nothing(constraint="uq_work_items_slot").returning(work_items.c.item_id)
        added += len(conn.execute(stmt).all())
    return added


def slot_count(conn: sa.Connection, kind: str, study_name: str) -> int:
    """Slots of (kind, study) that count towards its target (cancelled ones do not)."""
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(work_items).where(
                work_items.c.kind == kind, work_items.c.study_name == study_name, work_items.c.state != "cancelled"
            )
        ).scalar_one()
    )


def register_search(conn: sa.Connection, study_name: str, target: int, fixed_params: Sequence[Mapping[str, Any]] = ()) -> int:
    """A study's `search` items: `target` slots, the first ones with fixed parameters (extremes)."""
    payloads = [{"params": dict(p)} for p in list(fixed_params)[:target]]
    payloads += [{} for _ in range(target - len(payloads))]
    return enqueue_items(conn, SEARCH, study_name, payloads)


def extend_search(conn: sa.Connection, study_name: str, target: int) -> int:
    """Raise a study's target to `target` search slots, recorded as an amendment; returns new slots."""
    last = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(work_items.c.slot), 0)).where(
            work_items.c.kind == SEARCH, work_items.c.study_name == study_name
        )
    ).scalar_one()
    current = slot_count(conn, SEARCH, study_name)
    added = enqueue_items(conn, SEARCH, study_name, [{} for _ in range(target - current)], first_slot=last + 1)
    conn.execute(study_amendments.insert().values(study_name=study_name, action="extend", detail={"from": current, "to": target}))
    return added


def cancel_study(conn: sa.Connection, study_name: str) -> int:
    """Cancel every waiting item of the study (running ones finish); recorded as an amendment."""
    result = conn.execute(
        work_items.update()
        .where(work_items.c.study_name == study_name, work_items.c.state == "waiting")
        .values(state="cancelled", updated_at=sa.func.now())
    )
    conn.execute(study_amendments.insert().values(study_name=study_name, action="cancel", detail={"cancelled": result.rowcount}))
    return result.rowcount
