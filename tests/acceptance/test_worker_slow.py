"""End to end with real training (minutes on 2 CPU cores): `make test-slow`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.studies.search_space import SearchSpace
from tests.service_helpers import CALM, REPO, create, make_dataset, rows, start_worker
from tests.acceptance.test_worker import assert_targets_met_exactly, finish

pytestmark = pytest.mark.slow


def test_two_workers_train_real_trials(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1, 5), trials=2)
    procs = [start_worker(initialised_db, "--device", "cpu", "--worker-id", f"t{i}", *CALM, log_dir=tmp_path) for i in range(2)]
    assert finish(procs, timeout=1500) == [0, 0]

    assert_targets_met_exactly(engine)
    records = rows(engine, "SELECT r.*, s.spec FROM trial_records r JOIN study_specs s USING (study_name)")
    assert len(records) == 4
    for r in records:
        assert r["state"] in ("COMPLETE", "PRUNED"), r["reason"]
        assert SearchSpace.from_dict(r["spec"]["search_space"]).within_budget(r["n_params"])
        assert r["device"] == "cpu" and r["worker"] in ("t0", "t1") and r["code_version"]
        epochs = rows(engine, "SELECT * FROM trial_epochs WHERE trial_id = :id ORDER BY epoch", id=r["trial_id"])
        assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1)) and epochs
        if r["state"] == "COMPLETE":
            # The best epoch's metrics, every training value actually used, the exact parameter count.
            assert 0 <= r["val_auc"] <= 1 and r["val_loss"] > 0 and r["pred_std"] is not None
            assert r["epochs_run"] == len(epochs) and 1 <= r["best_epoch"] <= r["epochs_run"]
            assert r["val_auc"] == pytest.approx(epochs[r["best_epoch"] - 1]["val_auc"])
            for key in ("learning_rate", "weight_decay", "dropout", "warmup_frac", "batch_size", "micro_batch", "grad_accum"):
                assert r[key] is not None, key
            assert r["samples_per_s"] > 0 and r["duration_s"] > 0
    results = rows(engine, "SELECT * FROM trial_results")
    assert {(x["study_name"], x["trial_number"], x["n_params"]) for x in results} == {
        (r["study_name"], r["trial_number"], r["n_params"]) for r in records
    }


def test_coordinator_local_smoke(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    env = {**os.environ, "SCALESWEEP_HOME": str(tmp_path / "home"), "SCALESWEEP_HEARTBEAT_S": "1", "SCALESWEEP_GRACE_S": "10"}
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "--database-url", initialised_db, "local", "--workers", "2",
         "--preset", "smoke", "--device", "cpu", "--report-dir", str(tmp_path / "report")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial per study" in done.stdout
    assert (tmp_path / "report" / "index.html").is_file() and "report" in done.stderr
    assert "done in" in done.stderr
    assert_targets_met_exactly(engine)
    assert len(rows(engine, "SELECT * FROM study_specs")) == 4
    assert len(list((tmp_path / "home" / "logs").glob("worker-*.log"))) == 2


def test_sigterm_during_real_training_stops_at_a_boundary(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("300K",), horizons=(1,), trials=2)
    worker = start_worker(initialised_db, "--device", "cpu", "--worker-id", "stopped", *CALM, log_dir=tmp_path)
    deadline = time.monotonic() + 600
    while not rows(engine, "SELECT 1 FROM trial_epochs LIMIT 1"):  # mid-trial: one epoch done, more to go
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=300) == 0
    assert rows(engine, "SELECT state, reason FROM trial_records") == [{"state": "FAIL", "reason": "worker stopped"}]
    # Optuna holds the stopped attempt as FAIL; the ledger queues both slots again: the stopped one
    # with the parameters it ran (its retry), the other one as it was.
    assert rows(engine, "SELECT state::text AS state, count(*) AS n FROM trials GROUP BY 1 ORDER BY 1") == [{"state": "FAIL", "n": 1}]
    stopped = rows(engine, "SELECT a.item_id, a.params FROM attempts a WHERE a.state = 'FAIL'")
    assert len(stopped) == 1 and stopped[0]["params"]
    items = rows(engine, "SELECT item_id, state, payload FROM work_items WHERE kind = 'search' ORDER BY slot")
    assert [i["state"] for i in items] == ["waiting", "waiting"]
    retried = next(i for i in items if i["item_id"] == stopped[0]["item_id"])
    assert retried["payload"]["params"] == stopped[0]["params"]
