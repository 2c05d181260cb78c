"""Reaping: fail attempts that were lost, stalled or ran out of time, and retry them per policy.

By the database clock only (`now()` on the server; workers' clocks and time zones never enter).
An attempt is
- lost after `grace_period` s without a heartbeat, judged only once the server has been up for a
  grace period (after a restart, live workers get that long to reconnect and beat again);
- stalled when heartbeats arrive but its progress counter (optimizer steps) has not moved for its
  study's stall timeout: `stalled: no optimizer step for N s`;
- over time after its study's wall-clock limit: `timeout after N s`.
It is failed with that reason, its item re-queued with the same parameters (at most `max_retry`
times), and Optuna told FAIL. Safe from any number of processes at once (SKIP LOCKED).

Afterwards Optuna is made to agree with the ledger: a trial still RUNNING in Optuna with no
running attempt (a claim died after ask, or a finisher died before tell) is told the ledger's
outcome, and a WAITING one (a claim died between enqueue_trial and ask) is asked and failed.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from coordinator.lifecycle import optuna_adapter, outcomes
from coordinator.lifecycle.claims import StudyEntry
from coordinator.lifecycle.queries import query
from coordinator.lifecycle.settings import Liveness

log = logging.getLogger("scalesweep")


def reap(engine: sa.Engine, storage: optuna_adapter.Storage | None, entries: list[StudyEntry], liveness: Liveness) -> int:
    """Fail and retry every overdue attempt of these studies; returns how many this call failed."""
    names = [e.name for e in entries]
    failed = []
    with engine.begin() as conn:
        for row in conn.execute(query("overdue_attempts"), {"names": names, "grace": liveness.grace_period}).all():
            retry, reason = outcomes.retry_or_give_up(row.reason, row.attempt, liveness.max_retry)
            done = conn.execute(
                query("finish_attempt"), {"attempt_id": row.attempt_id, "state": "FAIL", "reason": reason, "value": None, "retry": retry}
            ).one()
            if done.kind == "search" and done.trial_id is not None:
                outcomes.write_record(conn, outcomes.final_record(done, "FAIL", reason, {}))
            which = f"#{row.trial_number}" if row.trial_number is not None else f"item {row.item_id}"
            log.warning("%s %s attempt %d failed (%s)%s", done.study_name, which, row.attempt, reason, "; re-queued" if retry else "")
            failed.append(done)
    if storage is not None:
        for done in failed:
            outcomes.tell_optuna(storage, None, done, "FAIL", None)
        settle_optuna(engine, storage, names)
    return len(failed)


def settle_optuna(engine: sa.Engine, storage: optuna_adapter.Storage, names: list[str]) -> int:
    """Tell Optuna the ledger's outcome of trials it still thinks are RUNNING (see module doc)."""
    settled = 0
    with engine.connect() as conn:
        unsettled = conn.execute(query("unsettled_optuna_trials"), {"names": names}).all()
    for trial in unsettled:
        with engine.begin() as conn:
            # Under the study's claim lock no claim is between its ask and its COMMIT, so a trial
            # with no attempt now really is an orphan. Busy: leave it to the next reap.
            if conn.execute(query("claim_lock_study"), {"study_name": trial.study_name}).first() is None:
                continue
            again = conn.execute(query("unsettled_optuna_trials"), {"names": [trial.study_name]}).all()
            if not any(t.number == trial.number for t in again):
                continue
            if trial.optuna_state == "WAITING":
                settled += optuna_adapter.discard_waiting(storage, trial.study_name)
                continue
            state = trial.attempt_state or "FAIL"
            value = trial.objective_values if trial.objective_values is not None else trial.value  # multi-objective: all of them
            settled += optuna_adapter.tell_by_name(storage, trial.study_name, trial.number, state, value)
    return settled
