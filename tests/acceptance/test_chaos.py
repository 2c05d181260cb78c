"""Database faults during live trials, with no retries allowed (`--max-retry 0`): `make test-chaos`.

- storm (80 trials, 5 workers): every ~0.3 s, pg_terminate_backend of some of the workers' connections (only this test's
  database on 127.0.0.1), for as long as the workers run;
- stall: a private server frozen (SIGSTOP of the postmaster and every backend) and a table lock held
  (ACCESS EXCLUSIVE on `attempts`), each for twice the grace period, while trials run.

Either way every target is met exactly, no live trial fails (a worker is never judged lost for a
silence the database caused), nothing is counted twice or lost, and every worker exits 0. Each test
prints its counts in one line (`pytest -s` shows them).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.store import engines
from coordinator.store.schema import init_db
from tests.private_postgres import Server, private_postgres, why_unavailable
from tests.service_helpers import create, make_dataset, rows, scalar, start_worker, wait_for

pytestmark = pytest.mark.slow

WORKERS = 5
# No retry: a trial failed by a database fault would stay failed and show in the counts.
NO_RETRY = ["--max-retry", "0", "--heartbeat-interval", "1"]


def assert_no_trial_failed(engine: sa.Engine, target: int) -> dict[str, int]:
    """Targets met exactly, no attempt failed or reported late, one attempt per slot; returns the counts."""
    progress = rows(engine, "SELECT * FROM study_progress")
    assert progress and all(p["finished"] == p["target_trials"] and p["running"] == p["waiting"] == 0 for p in progress), progress
    failed = rows(engine, "SELECT reason FROM attempts WHERE state <> 'COMPLETE' OR late_result IS NOT NULL")
    assert failed == [], failed
    counts = {
        "target": target,
        "attempts": int(scalar(engine, "SELECT count(*) FROM attempts")),  # type: ignore[arg-type]
        "complete": int(scalar(engine, "SELECT count(*) FROM attempts WHERE state = 'COMPLETE'")),  # type: ignore[arg-type]
        "records": int(scalar(engine, "SELECT count(*) FROM trial_records WHERE state = 'COMPLETE'")),  # type: ignore[arg-type]
        "optuna_complete": int(scalar(engine, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'")),  # type: ignore[arg-type]
        # Optuna trials asked by a claim whose transaction the fault rolled back: closed FAIL, never run.
        "optuna_orphans": int(scalar(engine, "SELECT count(*) FROM trials t WHERE NOT EXISTS "
                                             "(SELECT 1 FROM attempts a WHERE a.trial_id = t.trial_id)")),  # type: ignore[arg-type]
    }
    assert counts["attempts"] == counts["complete"] == counts["records"] == counts["optuna_complete"] == target, counts
    assert {r["state"] for r in rows(engine, "SELECT t.state::text AS state FROM trials t WHERE NOT EXISTS "
                                             "(SELECT 1 FROM attempts a WHERE a.trial_id = t.trial_id)")} <= {"FAIL"}
    return counts


def wait_all(procs: list, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except Exception:
            for q in procs:
                q.kill()
            raise
    return codes


def test_terminate_storm_fails_no_live_trial(initialised_db: str, admin_url: str, tmp_path: Path) -> None:
    url = initialised_db
    database = sa.engine.make_url(url).database
    create(url, dataset=make_dataset(url), preset="smoke", budgets=("100K",), horizons=(1, 5), trials=40)
    target = 80
    workers = [start_worker(url, "--synthetic", "0.3", "--grace-period", "20", *NO_RETRY, "--worker-id", f"storm{i}", log_dir=tmp_path)
               for i in range(WORKERS)]
    admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    done = threading.Event()
    killed = []

    def storm() -> None:
        rng = random.Random(17)
        deadline = time.monotonic() + 240  # bounded, whatever happens to the workers
        while not done.is_set() and time.monotonic() < deadline:
            with admin.connect() as conn:
                pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND application_name = 'scalesweep' "
                                            "AND pid <> pg_backend_pid()"), {"d": database}).scalars().all()
                victims = rng.sample(pids, k=min(len(pids), rng.randint(1, 3)))
                for pid in victims:
                    killed.append(conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar())
            done.wait(rng.uniform(0.1, 0.5))

    # The storm hits live trials: it starts once every worker is past its start-up check (which
    # refuses, in one line, a database it cannot reach at all) and has claimed.
    engine = engines.make_engine(url)
    wait_for(lambda: scalar(engine, "SELECT count(DISTINCT worker) FROM attempts") == WORKERS, 120, "every worker to claim")
    engine.dispose()
    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    try:
        codes = wait_all(workers, timeout=300)
    finally:
        done.set()
        thread.join(timeout=30)
        admin.dispose()
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert codes == [0] * WORKERS, logs[-4000:]
    assert "Traceback" not in logs, logs[-4000:]
    engine = engines.make_engine(url)
    try:
        counts = assert_no_trial_failed(engine, target)
    finally:
        engine.dispose()
    print(f"\nstorm: {sum(killed)} backends terminated, {WORKERS} workers exit 0, counts {counts}")
    assert sum(killed) >= 20, "the storm hit the workers"


def backend_pids(server: Server) -> list[int]:
    """The private server's postmaster and every process it forked (never the shared server's)."""
    postmaster = int((server.folder / "data" / "postmaster.pid").read_text().splitlines()[0])
    children = [int(p) for p in os.popen(f"ps -o pid= --ppid {postmaster}").read().split()]
    return [postmaster, *children]


def freeze(server: Server, seconds: float) -> None:
    pids = backend_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    for pid in reversed(pids):
        os.kill(pid, signal.SIGCONT)


def hold_table_lock(url: str, seconds: float) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE"))
            time.sleep(seconds)
    finally:
        engine.dispose()


@pytest.mark.skipif(why_unavailable() is not None, reason=f"no private PostgreSQL: {why_unavailable()}")
def test_database_stalls_fail_no_live_trial(tmp_path: Path) -> None:
    grace = 4
    with private_postgres() as server:
        url = server.url()
        init_db(url)
        create(url, dataset=make_dataset(url), preset="smoke", budgets=("100K",), horizons=(1, 5), trials=6)
        target = 12
        workers = [start_worker(url, "--synthetic", "6", "--grace-period", str(grace), *NO_RETRY, "--worker-id", f"stall{i}", log_dir=tmp_path)
                   for i in range(4)]
        engine = engines.make_engine(url)
        try:
            running = "SELECT count(*) FROM attempts WHERE state = 'RUNNING'"
            wait_for(lambda: scalar(engine, running) == 4, 120, "four running trials")
            engine.dispose()
            freeze(server, 2 * grace)  # the whole server: no heartbeat gets through, then all at once
            wait_for(lambda: scalar(engine, running) == 4, 60, "four running trials again")
            engine.dispose()
            hold_table_lock(url, 2 * grace)  # heartbeats and reapers queue behind the lock
            codes = wait_all(workers, timeout=300)
            logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
            assert codes == [0] * 4, logs[-4000:]
            counts = assert_no_trial_failed(engine, target)
        finally:
            engine.dispose()
    print(f"\nstall: server frozen {2 * grace} s and attempts locked {2 * grace} s (grace {grace} s), workers exit 0, counts {counts}")
