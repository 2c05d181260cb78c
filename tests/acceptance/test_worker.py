"""Workers against real PostgreSQL, as real processes: exact counts, lost trials, clean stops, reconnects.

Trials here are synthetic (`worker --synthetic S`: a sleep and a deterministic pseudo-objective) so
they exercise the real claim / heartbeat / reap / record / tell path in seconds. Real training end
to end is in test_worker_slow.py.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from coordinator.lifecycle.reconnect import DatabaseUnavailable, with_reconnect
from coordinator.lifecycle.settings import Liveness
from coordinator.studies.search_space import SearchSpace
from tests.service_helpers import CALM, FAST, create, make_dataset, rows, scalar, start_worker, state_counts, wait_for
from worker import leases


def finish(procs: list, timeout: float = 120) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except Exception:
            p.kill()
            raise
    return codes


def assert_targets_met_exactly(engine: sa.Engine) -> None:
    """Every study: exactly target final trials, nothing RUNNING or WAITING, every record agreeing."""
    progress = rows(engine, "SELECT * FROM study_progress")
    assert progress
    for p in progress:
        assert p["finished"] == p["target_trials"], p
        assert p["running"] == 0 and p["waiting"] == 0, p
    # Every attempt has exactly one record, and the ledger, the record and Optuna agree on its state.
    mismatched = rows(
        engine,
        "SELECT a.attempt_id, a.state AS ledger, t.state::text AS optuna, r.state AS record FROM attempts a "
        "JOIN trials t ON t.trial_id = a.trial_id LEFT JOIN trial_records r ON r.trial_id = a.trial_id "
        "WHERE r.state IS DISTINCT FROM a.state OR t.state::text <> a.state",
    )
    assert mismatched == []
    # An Optuna trial with no attempt was asked by a claim that died before its COMMIT: closed as FAIL.
    orphans = rows(engine, "SELECT t.state::text AS state FROM trials t WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.trial_id = t.trial_id)")
    assert {o["state"] for o in orphans} <= {"FAIL"}


def test_three_workers_finish_a_matrix_exactly(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", trials=4)  # 4 studies: 100K/300K x H1/H5
    procs = [start_worker(initialised_db, "--synthetic", "0.2", "--worker-id", f"w{i}", *CALM, log_dir=tmp_path) for i in range(3)]
    assert finish(procs) == [0, 0, 0]

    assert_targets_met_exactly(engine)
    counts = state_counts(engine)
    assert sum(counts.values()) == 16 and all(state == "COMPLETE" for _, state in counts)
    records = rows(engine, "SELECT r.*, s.spec FROM trial_records r JOIN study_specs s USING (study_name)")
    assert len(records) == 16
    for r in records:
        space = SearchSpace.from_dict(r["spec"]["search_space"])
        assert space.within_budget(r["n_params"]), r  # budgets respected, with the real count
        assert r["val_auc"] is not None and r["d_model"] and r["n_layers"] and r["learning_rate"]
        assert r["worker"] in {"w0", "w1", "w2"} and r["host"] and r["device"] == "synthetic" and r["code_version"]
    assert {r["worker"] for r in records} == {"w0", "w1", "w2"}  # the work was shared
    assert scalar(engine, "SELECT count(*) FROM trial_epochs") == 16
    # Every claim had its own sampler seed, recorded on its attempt.
    seeds = rows(engine, "SELECT i.study_name, a.sampler_seed FROM attempts a JOIN work_items i USING (item_id)")
    per_study: dict[str, set] = {}
    for s in seeds:
        per_study.setdefault(s["study_name"], set()).add(s["sampler_seed"])
    assert all(len(v) == 4 for v in per_study.values()) and len(per_study) == 4
    # Optuna's API tells the same story as the views.
    storage = optuna.storages.RDBStorage(initialised_db)
    for p in rows(engine, "SELECT * FROM study_progress"):
        study = optuna.load_study(study_name=p["study_name"], storage=storage)
        assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == p["complete"] == 4
        assert p["best_objective"] == pytest.approx(study.best_value)


def race_worker(url: str, worker_id: str, start_at: float, synthetic_epochs: int = 1) -> None:
    """A worker process (forked: no interpreter start-up) that begins claiming at `start_at`."""
    from worker.loop import Worker, WorkerOptions

    time.sleep(max(0.0, start_at - time.time()))
    options = WorkerOptions(url=url, worker_id=worker_id, synthetic=0.0, synthetic_epochs=synthetic_epochs, liveness=Liveness(1, 20, 2), poll_s=0.1)
    raise SystemExit(Worker(options).run())


def race(url: str, workers: int, synthetic_epochs: int = 1, timeout: float = 120) -> list[int | None]:
    """`workers` forked workers that start claiming at the same instant; their exit codes."""
    context = multiprocessing.get_context("fork")
    start_at = time.time() + 1.5
    procs = [context.Process(target=race_worker, args=(url, f"r{i}", start_at, synthetic_epochs)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    return [p.exitcode for p in procs]


def test_racing_workers_never_overshoot_the_target(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=7)
    assert race(initialised_db, 8) == [0] * 8
    assert state_counts(engine) == {("syn-a25-thr1pct-100K-h1", "COMPLETE"): 7}
    assert_targets_met_exactly(engine)


def running_trial(engine: sa.Engine) -> dict | None:
    """The RUNNING attempt, once its sampled params are written (right after the claim)."""
    found = rows(
        engine,
        "SELECT a.trial_id, a.trial_number AS number, a.item_id, a.attempt_id, a.params FROM attempts a "
        "WHERE a.state = 'RUNNING' AND a.params IS NOT NULL",
    )
    return found[0] if found else None


def test_sigkilled_worker_trial_is_failed_after_grace_and_rerun(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=4)
    victim = start_worker(initialised_db, "--synthetic", "60", "--worker-id", "victim", *FAST, log_dir=tmp_path)
    wait_for(lambda: running_trial(engine) is not None, 60, "the victim to claim a trial")
    lost = running_trial(engine)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()

    survivor = start_worker(initialised_db, "--synthetic", "0.2", "--worker-id", "survivor", *FAST, log_dir=tmp_path)
    assert finish([survivor]) == [0]
    assert time.monotonic() - killed_at >= 3  # not before the grace period

    assert_targets_met_exactly(engine)
    assert state_counts(engine) == {("syn-a25-thr1pct-100K-h1", "COMPLETE"): 4, ("syn-a25-thr1pct-100K-h1", "FAIL"): 1}
    failed = rows(engine, "SELECT * FROM trial_records WHERE state = 'FAIL'")
    assert [(f["trial_id"], f["worker"]) for f in failed] == [(lost["trial_id"], "victim")]
    assert failed[0]["reason"].startswith("lost: no heartbeat for over 3 s")
    # The lost attempt's item was retried once, by the survivor, with the same parameters.
    attempts = rows(engine, "SELECT attempt, state, worker, trial_number, params FROM attempts WHERE item_id = :i ORDER BY attempt", i=lost["item_id"])
    assert [(a["attempt"], a["state"], a["worker"]) for a in attempts] == [(1, "FAIL", "victim"), (2, "COMPLETE", "survivor")]
    assert attempts[1]["params"] == attempts[0]["params"] == lost["params"]
    storage = optuna.storages.RDBStorage(initialised_db)
    study = optuna.load_study(study_name="syn-a25-thr1pct-100K-h1", storage=storage)
    retry = study.trials[attempts[1]["trial_number"]]
    assert retry.params == lost["params"] and retry.state == optuna.trial.TrialState.COMPLETE  # Optuna agrees


def test_sigterm_exits_0_and_leaves_nothing_running(engine: sa.Engine, initialised_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data_helpers import run_cli

    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=3)
    worker = start_worker(initialised_db, "--synthetic", "60", "--worker-id", "stopped", *FAST, log_dir=tmp_path)
    wait_for(lambda: running_trial(engine) is not None, 60, "the worker to claim a trial")
    stopped = running_trial(engine)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0

    assert running_trial(engine) is None
    record = rows(engine, "SELECT state, reason, worker FROM trial_records WHERE trial_id = :id", id=stopped["trial_id"])
    assert record == [{"state": "FAIL", "reason": "worker stopped", "worker": "stopped"}]
    item = rows(engine, "SELECT state, payload FROM work_items WHERE item_id = :i", i=stopped["item_id"])
    assert item == [{"state": "waiting", "payload": {"params": stopped["params"]}}]  # queued for the next worker, same params
    code, out, _ = run_cli(capsys, "--database-url", initialised_db, "reap", "--grace-period", "3", "--heartbeat-interval", "1")
    assert code == 0 and out.startswith("reaped 0 attempt(s) in 1 studies")


def test_workers_survive_terminated_connections(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", trials=4)
    # 1 s trials keep the workers in flight long enough that some storms land mid-query, not only on
    # idle pooled connections (which the pool's pre-ping replaces silently).
    procs = [start_worker(initialised_db, "--synthetic", "1.0", "--worker-id", f"w{i}", *FAST, log_dir=tmp_path) for i in range(2)]
    database = engine.url.database
    killer = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    terminated = 0
    wait_for(lambda: (scalar(engine, "SELECT count(*) FROM trials WHERE state <> 'WAITING'") or 0) > 0, 60, "the first claim")
    try:
        while any(p.poll() is None for p in procs) and terminated < 80:
            with killer.connect() as conn:
                terminated += conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).scalar()
            time.sleep(0.4)
    finally:
        killer.dispose()
    engine.dispose()  # its pooled connections were terminated too
    assert finish(procs, timeout=180) == [0, 0]
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    # The workers really lost connections (named by their cause when the server says it terminated them).
    assert terminated >= 2 and ("the connection was terminated by the server" in logs or "database connection lost" in logs)
    assert_targets_met_exactly(engine)
    assert {state for _, state in state_counts(engine)} <= {"COMPLETE", "FAIL"}


def test_reconnect_gives_up_after_its_budget() -> None:
    calls = []
    slept = []

    def down() -> None:
        calls.append(1)
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(DatabaseUnavailable, match="database connection lost for over 2 s while trying to claim"):
        with_reconnect(down, "claim a trial", budget_s=2, sleep=slept.append)
    assert len(calls) >= 2 and slept[:3] == [0.5, 1.0, 2.0][: len(slept[:3])]
    with pytest.raises(ZeroDivisionError):  # anything else is not retried
        with_reconnect(lambda: 1 / 0, "divide", budget_s=2, sleep=slept.append)


def test_dataset_hash_mismatch_is_refused(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=2)
    with engine.begin() as conn:  # as if the study had been created on other data under the same version
        conn.execute(sa.text("UPDATE study_specs SET spec = jsonb_set(spec, '{dataset,sha256}', '\"0000\"')"))
    worker = start_worker(initialised_db, "--device", "cpu", "--max-trials", "1", *CALM, log_dir=tmp_path)
    assert finish([worker]) == [2]  # nothing else is runnable: non-zero
    log = next(tmp_path.glob("worker-*.log")).read_text()
    assert "study syn-a25-thr1pct-100K-h1 refused: dataset syn-a25:1 has sha256" in log and "but the study was created on 0000" in log
    assert "error: no runnable study" in log and "Traceback" not in log
    assert scalar(engine, "SELECT count(*) FROM attempts") == 0  # no trial consumed
    assert scalar(engine, "SELECT count(*) FROM trials") == 0
    assert scalar(engine, "SELECT count(*) FROM work_items WHERE state = 'waiting'") == 2


def fake_gpus(n: int) -> list[leases.Gpu]:
    return [leases.Gpu(key=f"GPU-fake-{i}", index=i, name="Fake GPU", visible_id=f"GPU-fake-{i}") for i in range(n)]


def test_gpu_leases_one_worker_per_device(engine: sa.Engine) -> None:
    gpus = fake_gpus(2)
    a = leases.acquire(engine, gpus, "a", share=1, ttl_s=60)
    b = leases.acquire(engine, gpus, "b", share=1, ttl_s=60)
    assert a and b and {a.gpu.index, b.gpu.index} == {0, 1}
    assert leases.acquire(engine, gpus, "c", share=1, ttl_s=60) is None  # all taken
    assert leases.refresh(engine, a, ttl_s=60)
    leases.release(engine, a)
    c = leases.acquire(engine, gpus, "c", share=1, ttl_s=60)
    assert c is not None and c.gpu == a.gpu


def test_gpu_leases_expire_and_can_be_shared(engine: sa.Engine) -> None:
    gpus = fake_gpus(2)
    short = leases.acquire(engine, gpus, "short", share=1, ttl_s=1)
    assert short is not None
    leases.acquire(engine, gpus, "other", share=1, ttl_s=60)
    time.sleep(1.5)  # "short" stopped refreshing: its lease expired
    taker = leases.acquire(engine, gpus, "taker", share=1, ttl_s=60)
    assert taker is not None and taker.gpu == short.gpu
    assert not leases.refresh(engine, short, ttl_s=60)  # the old holder learns it lost the device

    with engine.begin() as conn:
        conn.execute(leases.device_leases.delete())
    shared = [leases.acquire(engine, gpus, f"s{i}", share=2, ttl_s=60) for i in range(5)]
    assert [s.gpu.index for s in shared[:4] if s] == [0, 1, 0, 1]  # least-loaded device first
    assert shared[4] is None


def test_worker_errors_are_one_line(initialised_db: str, tmp_path: Path) -> None:
    worker = start_worker(initialised_db, log_dir=tmp_path)
    assert finish([worker]) == [2]
    log = next(tmp_path.glob("worker-*.log")).read_text()
    assert log.strip().splitlines() == ["error: no study at all: create them with `coordinator create-studies`"]
    (tmp_path / "bad").mkdir()
    bad = start_worker("postgresql://postgres@127.0.0.1:1/nothing", log_dir=tmp_path / "bad")
    assert finish([bad]) == [2]
    assert "cannot reach the database" in next((tmp_path / "bad").glob("worker-*.log")).read_text()


def test_claims_go_to_the_study_furthest_behind_and_stop_at_the_target(engine: sa.Engine, initialised_db: str) -> None:
    from coordinator.lifecycle import claims, optuna_adapter, outcomes

    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1, 5), trials=3)
    storage = optuna_adapter.open_storage(initialised_db)
    who = claims.Who("test", "host", "cpu", "v")
    try:
        entries = claims.load_studies(storage.engine)
        h1, h5 = entries
        first = claims.claim_next(storage.engine, storage, [h1], who)
        assert isinstance(first, claims.ClaimedItem)
        chosen = [claims.claim_next(storage.engine, storage, entries, who) for _ in range(5)]
        # h5 is behind (0 of 3 vs 1 of 3), then they alternate; ties go by name.
        assert [c.study.name if isinstance(c, claims.ClaimedItem) else c for c in chosen] == [h5.name, h1.name, h5.name, h1.name, h5.name]
        assert claims.claim_next(storage.engine, storage, entries, who) is None  # 3 + 3 claimed: no slot left
        with storage.engine.connect() as conn:
            progress = claims.read_progress(conn, [h1.name, h5.name])
        assert [(p.running, p.target, p.waiting, p.done) for p in progress.values()] == [(3, 3, 0, False), (3, 3, 0, False)]
        for claim in [first, *chosen]:
            assert isinstance(claim, claims.ClaimedItem)
            finished, row = outcomes.finish(storage.engine, claim.attempt_id, "COMPLETE", value=0.5)
            assert finished.counted and row is not None
            outcomes.tell_optuna(storage, claim.optuna_study, row, "COMPLETE", 0.5)
        with storage.engine.connect() as conn:
            assert all(p.done and p.finished == 3 for p in claims.read_progress(conn, [h1.name, h5.name]).values())
        seeds = {c.sampler_seed for c in [first, *chosen] if isinstance(c, claims.ClaimedItem)}
        assert len(seeds) == 6  # every claim of every study samples with its own seed
    finally:
        storage.engine.dispose()
