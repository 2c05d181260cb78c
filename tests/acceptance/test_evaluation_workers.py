"""Evaluation runs are ledger items: racing worker processes claim exactly S x k per study, and a
SIGKILLed worker's run is reaped after the grace period and re-run by another (real PostgreSQL,
real processes, real training of a 10K-parameter configuration)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.commands.evaluate import store_answers, submit
from coordinator.evaluation.plan import record_protocol
from coordinator.evaluation.protocol import make_protocol
from coordinator.lifecycle.claims import load_studies
from coordinator.lifecycle.ledger import EVALUATION
from coordinator.lifecycle.settings import Liveness
from tests.service_helpers import create, make_dataset, rows, start_worker, wait_for

torch = pytest.importorskip("torch")
from worker.loop import Worker, WorkerOptions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def running_evaluation(engine: sa.Engine, worker: str) -> dict | None:
    found = rows(engine, "SELECT a.attempt_id, a.item_id FROM attempts a JOIN work_items i USING (item_id) "
                         "WHERE i.kind = :k AND a.state = 'RUNNING' AND a.worker = :w", k=EVALUATION, w=worker)
    return found[0] if found else None


# Lost after 10 s without a heartbeat: quick enough for a test, slow enough that a loaded 2-core
# machine does not starve a healthy racer's heartbeat thread for that long.
LIVENESS = ["--heartbeat-interval", "1", "--grace-period", "10"]


@pytest.mark.slow  # minutes on a loaded 2-core machine: real training in three worker processes
def test_racing_workers_run_each_evaluation_exactly_once_and_survive_a_sigkill(
    engine: sa.Engine, initialised_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = initialised_db
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # several workers on 2 cores: one thread each, as `coordinator local` does
    # Two studies, searched for real (seconds), then evaluated with k = 2 configurations x 2 seeds.
    dataset = make_dataset(url, days=3000)
    create(url, dataset=dataset, preset="smoke", budgets=("10K",), horizons=(1, 3), trials=2)
    assert Worker(WorkerOptions(url=url, worker_id="searcher", device="cpu", liveness=Liveness(1, 20, 2), poll_s=0.1)).run() == 0
    protocol = make_protocol("smoke", k=2, n_seeds=2)
    evaluations = [record_protocol(engine, entry, protocol) for entry in load_studies(engine)]
    expected = sum(e.n_runs for e in evaluations)
    assert expected == 8 and submit(engine, evaluations) == 8
    assert submit(engine, evaluations) == 0  # enqueueing again adds nothing

    victim = start_worker(url, "--device", "cpu", "--worker-id", "victim", *LIVENESS, log_dir=tmp_path)
    wait_for(lambda: running_evaluation(engine, "victim") is not None, 120, "the victim to claim an evaluation run")
    lost = running_evaluation(engine, "victim")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    racers = [start_worker(url, "--device", "cpu", "--worker-id", f"racer{i}", *LIVENESS, log_dir=tmp_path) for i in range(2)]
    deadline = time.monotonic() + 400
    for p in racers:
        assert p.wait(timeout=max(1.0, deadline - time.monotonic())) == 0

    # Exactly S x k runs per study: one stored row each, every item COMPLETE, no duplicate attempt.
    counts = rows(engine, "SELECT study_name, slots, finished, complete, waiting, running FROM work_counts WHERE kind = :k", k=EVALUATION)
    assert sorted((c["slots"], c["finished"], c["complete"], c["waiting"], c["running"]) for c in counts) == [(4, 4, 4, 0, 0)] * 2
    stored = rows(engine, "SELECT study_name, rank, seed, item_id, attempt_id, worker FROM evaluation_runs")
    assert len(stored) == expected == len({(r["study_name"], r["rank"], r["seed"]) for r in stored})
    complete = rows(engine, "SELECT a.attempt_id, a.item_id, a.worker FROM attempts a JOIN work_items i USING (item_id) "
                            "WHERE i.kind = :k AND a.state = 'COMPLETE'", k=EVALUATION)
    assert len(complete) == expected
    assert {(r["item_id"], r["attempt_id"]) for r in stored} == {(c["item_id"], c["attempt_id"]) for c in complete}
    assert {c["worker"] for c in complete} == {"racer0", "racer1"}  # both raced for the same items
    # The killed attempt was failed as lost and its item re-run by a racer.
    history = rows(engine, "SELECT attempt, state, worker, reason FROM attempts WHERE item_id = :i ORDER BY attempt", i=lost["item_id"])
    assert [(h["state"], h["worker"]) for h in history][0] == ("FAIL", "victim") and history[0]["reason"].startswith("lost")
    assert history[-1]["state"] == "COMPLETE" and history[-1]["worker"].startswith("racer")

    store_answers(engine, evaluations)
    final = rows(engine, "SELECT study_name, rank, n_seeds FROM final_results ORDER BY study_name, rank")
    assert [(f["rank"], f["n_seeds"]) for f in final] == [(1, 2), (2, 2)] * 2
    assert len(rows(engine, "SELECT * FROM scaling")) == 2
