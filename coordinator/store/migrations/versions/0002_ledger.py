"""The ledger: work_items, attempts, study_amendments; every existing study's trials moved into it.

Backfill, per study in study_specs, from Optuna's tables (read only):
- a chain of attempts is a trial and its retries (Optuna's old `retry_history` lists the earlier
  attempts); each chain is one work item in slot order, finished with the last attempt's outcome,
  running, or waiting (a queued retry or enqueued extreme; its fixed parameters become the item's);
- every trial that left WAITING becomes an attempt with its provenance (the user attributes the old
  worker set), reason (trial_records), value and times; RUNNING ones get a heartbeat of now(), so the
  workers of the new release have a whole grace period before they are judged;
- slots up to the study's target are added as waiting items.
Nothing is deleted: Optuna's rows, trial_records and trial_epochs stay as they were.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_ledger"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_items",
        sa.Column("item_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="waiting"),
        sa.Column("outcome", sa.Text),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("attempts_made", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("kind", "study_name", "slot", name="uq_work_items_slot"),
        sa.CheckConstraint("state IN ('waiting', 'running', 'finished', 'cancelled')", name="ck_work_items_state"),
    )
    op.create_index("ix_work_items_study", "work_items", ["study_name", "kind", "state", "slot"])
    op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("work_items.item_id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("trial_number", sa.Integer),
        sa.Column("trial_id", sa.Integer),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("device", sa.Text),
        sa.Column("code_version", sa.Text),
        sa.Column("sampler_seed", sa.BigInteger),
        sa.Column("synthetic", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("state", sa.Text, nullable=False, server_default="RUNNING"),
        sa.Column("reason", sa.Text),
        sa.Column("value", sa.Float),
        sa.Column("params", JSONB),
        sa.Column("architecture", JSONB),
        sa.Column("n_params", sa.BigInteger),
        sa.Column("stall_timeout_s", sa.Integer),
        sa.Column("time_limit_s", sa.Integer),
        sa.Column("progress", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("late_result", JSONB),
        sa.UniqueConstraint("item_id", "attempt", name="uq_attempts_item_attempt"),
        sa.CheckConstraint("state IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL')", name="ck_attempts_state"),
    )
    op.create_index("ix_attempts_trial_id", "attempts", ["trial_id"])
    op.create_index("ix_attempts_running", "attempts", ["item_id"], postgresql_where=sa.text("state = 'RUNNING'"))
    op.create_table(
        "study_amendments",
        sa.Column("amendment_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_study_amendments_study_name", "study_amendments", ["study_name"])
    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("study_amendments")
    op.drop_table("attempts")
    op.drop_table("work_items")


# Limits the new release gives attempts it did not start (the spec's defaults).
STALL_TIMEOUT_S, TIME_LIMIT_S = 1800, 86_400

TRIALS_SQL = """
SELECT t.trial_id, t.number, t.state::text AS state, sp.study_name, sp.target_trials,
       (SELECT value_json FROM trial_system_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'retry_history') AS history,
       (SELECT value_json FROM trial_system_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'fixed_params') AS fixed,
       (SELECT jsonb_object_agg(a.key, a.value_json::jsonb) FROM trial_user_attributes a WHERE a.trial_id = t.trial_id) AS attrs,
       (SELECT v.value FROM trial_values v WHERE v.trial_id = t.trial_id AND v.objective = 0) AS value,
       r.reason, r.device AS record_device, r.n_params, r.d_model, r.n_layers, r.n_heads, r.d_ff,
       t.datetime_start, t.datetime_complete
FROM trials t
JOIN study_specs sp ON sp.study_id = t.study_id
LEFT JOIN trial_records r ON r.trial_id = t.trial_id
ORDER BY sp.study_name, t.number
"""


def backfill(conn: sa.Connection) -> None:
    by_study: dict[str, list[Any]] = defaultdict(list)
    targets: dict[str, int] = {}
    for row in conn.execute(sa.text(TRIALS_SQL)):
        by_study[row.study_name].append(row)
        targets[row.study_name] = row.target_trials
    for name, target in conn.execute(sa.text("SELECT study_name, target_trials FROM study_specs")).all():
        targets[name] = target
    for name, target in sorted(targets.items()):
        backfill_study(conn, name, target, by_study.get(name, []))


def backfill_study(conn: sa.Connection, study_name: str, target: int, trials: list[Any]) -> None:
    # Chains: a retry's retry_history lists every earlier attempt, the first being the chain's root.
    root_of: dict[int, int] = {}
    for t in trials:
        history = json.loads(t.history) if t.history else []
        root_of[t.number] = history[0] if history else t.number
    chains: dict[int, list[Any]] = defaultdict(list)
    for t in trials:
        chains[root_of[t.number]].append(t)
    slot = 0
    for root in sorted(chains):
        slot += 1
        chain = sorted(chains[root], key=lambda t: t.number)
        started = [t for t in chain if t.state != "WAITING"]
        last = chain[-1]
        if last.state == "WAITING":
            state, outcome = "waiting", None
        elif last.state == "RUNNING":
            state, outcome = "running", None
        else:
            state, outcome = "finished", last.state
        payload = {"params": json.loads(last.fixed)} if last.state == "WAITING" and last.fixed else {}
        item_id = conn.execute(
            sa.text(
                "INSERT INTO work_items (kind, study_name, slot, state, outcome, payload, attempts_made) "
                "VALUES ('search', :s, :slot, :state, :outcome, CAST(:payload AS jsonb), :n) RETURNING item_id"
            ),
            {"s": study_name, "slot": slot, "state": state, "outcome": outcome, "payload": json.dumps(payload), "n": len(started)},
        ).scalar_one()
        for attempt, t in enumerate(started, start=1):
            attrs = t.attrs or {}
            arch = {k: getattr(t, k) for k in ("d_model", "n_layers", "n_heads", "d_ff") if getattr(t, k) is not None}
            device = t.record_device or attrs.get("device")
            conn.execute(
                sa.text(
                    """
                    INSERT INTO attempts (item_id, attempt, trial_number, trial_id, worker, host, device, code_version,
                        sampler_seed, synthetic, state, reason, value, architecture, n_params, stall_timeout_s, time_limit_s,
                        claimed_at, heartbeat_at, progress_at, finished_at)
                    VALUES (:item, :attempt, :number, :trial_id, :worker, :host, :device, :code, :seed, :synthetic, :state,
                        :reason, :value, CAST(:arch AS jsonb), :n_params, :stall, :limit,
                        -- Optuna's times are naive local times of whichever worker wrote them: read as
                        -- the server's zone; heartbeats start now (the new workers' clock).
                        COALESCE(CAST(:started AS timestamp)::timestamptz, now()), now(), now(),
                        CAST(:completed AS timestamp)::timestamptz)
                    """
                ),
                {
                    "item": item_id, "attempt": attempt, "number": t.number, "trial_id": t.trial_id,
                    "worker": attrs.get("worker", "unknown"), "host": attrs.get("host", "unknown"), "device": device,
                    "code": attrs.get("code_version"), "seed": attrs.get("sampler_seed"), "synthetic": device == "synthetic",
                    "state": t.state, "reason": t.reason, "value": t.value if t.state == "COMPLETE" else None,
                    "arch": json.dumps(arch) if arch else None, "n_params": t.n_params or attrs.get("n_params"),
                    "stall": STALL_TIMEOUT_S, "limit": TIME_LIMIT_S, "started": t.datetime_start, "completed": t.datetime_complete,
                },
            )
    if slot < target:
        conn.execute(
            sa.text(
                "INSERT INTO work_items (kind, study_name, slot) SELECT 'search', :s, g FROM generate_series(:first, :last) AS g"
            ),
            {"s": study_name, "first": slot + 1, "last": target},
        )
