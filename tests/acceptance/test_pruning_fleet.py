"""ASHA and Hyperband under racing worker processes: targets met exactly, trials stopped at their rung;
a pruned trial frees its slot and its GPU lease at once.

Synthetic trials (`worker --synthetic 0 --synthetic-epochs 4`) report four epochs of a pseudo-objective
fixed by their parameters through the same epoch reports, pruner and ledger as trained ones.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from coordinator.lifecycle import claims, ledger, optuna_adapter, outcomes
from coordinator.lifecycle.settings import Liveness
from tests.acceptance.test_worker import assert_targets_met_exactly, fake_gpus, race
from tests.service_helpers import create, make_dataset, rows, scalar, state_counts, wait_for
from worker import leases
from worker.loop import Worker, WorkerOptions

TARGET = 16
EPOCHS = 4


@pytest.mark.slow
def test_asha_and_hyperband_prune_under_racing_workers(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    for kind in ("asha", "hyperband"):
        create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=TARGET, pruner=kind, suffix=kind)
    assert race(initialised_db, 6, synthetic_epochs=EPOCHS, timeout=180) == [0] * 6

    assert_targets_met_exactly(engine)
    counts = state_counts(engine)
    for kind in ("asha", "hyperband"):
        name = f"syn-a25-thr1pct-100K-h1-{kind}"
        assert counts.get((name, "COMPLETE"), 0) + counts.get((name, "PRUNED"), 0) == TARGET, counts
        assert counts.get((name, "PRUNED"), 0) > 0, counts  # the worse trials were stopped
        # The smoke schedule (3 epochs) has one rung, after 2 epochs: every pruned trial ran exactly 2.
        pruned = rows(
            engine,
            "SELECT r.reason, (SELECT max(epoch) FROM trial_epochs e WHERE e.trial_id = r.trial_id) AS epochs "
            "FROM trial_records r WHERE r.study_name = :n AND r.state = 'PRUNED'",
            n=name,
        )
        assert {p["epochs"] for p in pruned} == {2}, pruned
        assert all(p["reason"].startswith(f"{kind} pruner at epoch 2: best val_auc so far") for p in pruned), pruned
        complete = rows(engine, "SELECT epochs_run FROM trial_records WHERE study_name = :n AND state = 'COMPLETE'", n=name)
        assert {c["epochs_run"] for c in complete} == {EPOCHS}


def test_a_pruned_trial_frees_its_slot_and_the_gpu_at_once(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=2, pruner="asha")
    storage = optuna_adapter.open_storage(initialised_db)
    entries = claims.load_studies(storage.engine)
    # A trial far ahead, still running elsewhere: 0.95 at the first rung (epoch 2), above any synthetic trial.
    leader = claims.claim_next(storage.engine, storage, entries, claims.Who("elsewhere", "host", "cpu", "v"))
    assert isinstance(leader, claims.ClaimedItem)
    reports = optuna_adapter.EpochReports(leader.trial, "maximize", 3)
    assert not reports.epoch(0.90, 1) and not reports.epoch(0.95, 2)

    options = WorkerOptions(url=initialised_db, worker_id="w", synthetic=0.0, synthetic_epochs=3, liveness=Liveness(1, 20, 2), poll_s=0.05)
    worker = Worker(options)
    worker.storage, worker.entries = storage, entries
    worker.lease = leases.acquire(engine, fake_gpus(1), "w", share=1, ttl_s=60)
    thread = threading.Thread(target=worker.loop)
    thread.start()

    def mine() -> list[dict]:
        return rows(engine, "SELECT state, device FROM attempts WHERE worker = 'w' ORDER BY attempt_id")

    def leased() -> int:
        return int(scalar(engine, "SELECT count(*) FROM device_leases"))

    try:
        # Its trial is pruned at the rung; nothing else waits, so the GPU is given back while the leader runs.
        wait_for(lambda: [a["state"] for a in mine()] == ["PRUNED"] and leased() == 0, 30, "the pruned trial to free the GPU")
        assert thread.is_alive() and worker.idle_gpu is not None
        with engine.begin() as conn:  # one more slot: the worker takes the same GPU again and runs it
            ledger.extend_search(conn, leader.study.name, 3)
        wait_for(lambda: [a["state"] for a in mine()] == ["PRUNED", "PRUNED"] and leased() == 0, 30, "the second trial")
        finished, row = outcomes.finish(storage.engine, leader.attempt_id, "COMPLETE", value=0.95)
        outcomes.tell_optuna(storage, leader.optuna_study, row, "COMPLETE", 0.95, leader.trial)
        thread.join(timeout=30)
        assert not thread.is_alive()  # every slot finished: the worker is done
    finally:
        worker.stop.set()
        thread.join(timeout=10)
        storage.engine.dispose()
    assert {a["device"] for a in mine()} == {"cuda:0 Fake GPU (lease slot 0)"}  # both ran on the leased GPU
    assert leased() == 0 and worker.lease is None
    assert_targets_met_exactly(engine)
