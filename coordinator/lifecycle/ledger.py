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
from sqlalchemy.dialects.postgresql import JSONB, insert

from coordinator.schema import metadata

SEARCH = "search"  # the kind of an Optuna trial of a study

work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("item_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),  # 1..n within (kind, study)
    sa.Column("state", sa.Text, nullable=False, server_default="waiting"),  # waiting | running | finished | cancelled
    sa.Column("outcome", sa.Text),  # COMPLETE | PRUNED | FAIL once finished
    sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # search: {"params": {...}} when fixed
    sa.Column("attempts_made", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("kind", "study_name", "slot", name="uq_work_items_slot"),
    sa.CheckConstraint("state IN ('waiting', 'running', 'finished', 'cancelled')", name="ck_work_items_state"),
)
sa.Index("ix_work_items_waiting", work_items.c.kind, work_items.c.study_name, work_items.c.slot, postgresql_where=sa.text("state = 'waiting'"))
sa.Index("ix_work_items_study", work_items.c.study_name, work_items.c.kind, work_items.c.state)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("attempt_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("work_items.item_id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # 1, 2, ... within the item
    sa.Column("trial_number", sa.Integer),  # Optuna's trial number (search only)
    sa.Column("trial_id", sa.Integer),  # Optuna's trials.trial_id, looked up in SQL at the claim
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("device", sa.Text),
    sa.Column("code_version", sa.Text),
    sa.Column("sampler_seed", sa.BigInteger),
    sa.Column("synthetic", sa.Boolean, nullable=False, server_default=sa.false()),  # `worker --synthetic`: not a real result
    sa.Column("state", sa.Text, nullable=False, server_default="RUNNING"),  # RUNNING | COMPLETE | PRUNED | FAIL
    sa.Column("reason", sa.Text),
    sa.Column("value", sa.Float),  # the objective (COMPLETE), as told to Optuna
    sa.Column("params", JSONB),  # sampled parameters, re-used by a retry
    sa.Column("architecture", JSONB),  # known at the claim
    sa.Column("n_params", sa.BigInteger),  # known at the claim
    sa.Column("stall_timeout_s", sa.Integer),  # from the study spec, at the claim
    sa.Column("time_limit_s", sa.Integer),
    sa.Column("progress", sa.BigInteger, nullable=False, server_default="0"),  # optimizer steps so far
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("progress_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("late_result", JSONB),  # what a reaped attempt reported afterwards (never counted)
    sa.UniqueConstraint("item_id", "attempt", name="uq_attempts_item_attempt"),
    sa.CheckConstraint("state IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL')", name="ck_attempts_state"),
)
sa.Index("ix_attempts_trial_id", attempts.c.trial_id)
sa.Index("ix_attempts_running", attempts.c.item_id, postgresql_where=sa.text("state = 'RUNNING'"))

study_amendments = sa.Table(
    "study_amendments",
    metadata,
    sa.Column("amendment_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False, index=True),
    sa.Column("action", sa.Text, nullable=False),  # extend | cancel
    sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# GPU leases: each worker owns one GPU (or one of `share` slots on it); see worker/leases.py.
device_leases = sa.Table(
    "device_leases",
    metadata,
    sa.Column("device", sa.Text, primary_key=True),  # GPU UUID, or '<host>:<index>' when none is known
    sa.Column("slot", sa.Integer, primary_key=True),  # 0 .. share-1: how many workers may share the device
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("device_index", sa.Integer, nullable=False),  # index on its host (nvidia-smi order)
    sa.Column("device_name", sa.Text),
    sa.Column("leased_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def enqueue_items(conn: sa.Connection, kind: str, study_name: str, payloads: Sequence[Mapping[str, Any]], first_slot: int = 1) -> int:
    """Items `first_slot`, `first_slot + 1`, ... of (kind, study) with these payloads; returns how many were new.

    Idempotent: a slot that exists already is left as it is, so running the same call twice (or two
    processes racing) creates each item once.
    """
    if not payloads:
        return 0
    rows = [{"kind": kind, "study_name": study_name, "slot": first_slot + i, "payload": dict(p)} for i, p in enumerate(payloads)]
    stmt = insert(work_items).values(rows).on_conflict_do_nothing(constraint="uq_work_items_slot").returning(work_items.c.item_id)
    return len(conn.execute(stmt).all())


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
