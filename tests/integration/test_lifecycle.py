"""The ledger's own guarantees: other kinds of work, liveness by progress and wall clock, late results,
the read-only role, the database clock, and Optuna used only through its public API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator.lifecycle import claims, ledger, optuna_adapter, outcomes, reaper
from coordinator.lifecycle.settings import Liveness
from coordinator.store import roles
from coordinator.studies.spec import LimitsSpec
from tests.data_helpers import run_cli
from tests.service_helpers import CALM, FAST, REPO, create, make_dataset, rows, scalar, start_worker, wait_for
from tests.acceptance.test_worker import assert_targets_met_exactly, finish

STUDY = "syn-a25-thr1pct-100K-h1"


def one_study(url: str, trials: int = 2, limits: LimitsSpec | None = None) -> None:
    make_dataset(url)
    create(url, preset="smoke", budgets=("100K",), horizons=(1,), trials=trials, limits=limits or LimitsSpec())


def test_other_kinds_travel_the_same_road(engine: sa.Engine, initialised_db: str) -> None:
    """An `evaluation` item: enqueued idempotently, claimed, beaten, reaped and retried, with no Optuna trial."""
    one_study(initialised_db)
    with engine.begin() as conn:
        assert ledger.enqueue_items(conn, "evaluation", STUDY, [{"trial_number": 0}, {"trial_number": 1}]) == 2
        assert ledger.enqueue_items(conn, "evaluation", STUDY, [{"trial_number": 0}, {"trial_number": 1}]) == 0  # idempotent
    entries = claims.load_studies(engine)
    who = claims.Who("ev", "host", "cpu", "test")
    first = claims.claim_next(engine, None, entries, who, kinds=["evaluation"])
    assert isinstance(first, claims.ClaimedItem) and first.kind == "evaluation" and first.trial_number is None
    assert first.payload == {"trial_number": 0} and first.attempt == 1
    assert claims.heartbeat(engine, first.attempt_id, 5)
    second = claims.claim_next(engine, None, entries, who, kinds=["evaluation"])
    assert isinstance(second, claims.ClaimedItem) and second.slot == 2
    assert claims.claim_next(engine, None, entries, who, kinds=["evaluation"]) is None
    finished, _ = outcomes.finish(engine, first.attempt_id, "COMPLETE", value=0.6)
    assert finished.counted
    # The second one's worker vanished: after the grace period it is failed and re-queued.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE attempts SET heartbeat_at = now() - interval '1 hour' WHERE attempt_id = :a"), {"a": second.attempt_id})
    assert reaper.reap(engine, None, entries, Liveness(1, 3, 2)) == 1
    again = claims.claim_next(engine, None, entries, who, kinds=["evaluation"])
    assert isinstance(again, claims.ClaimedItem) and (again.item_id, again.attempt) == (second.item_id, 2)
    counts = rows(engine, "SELECT slots, waiting, running, finished, claims FROM work_counts WHERE kind = 'evaluation'")
    assert counts == [{"slots": 2, "waiting": 0, "running": 1, "finished": 1, "claims": 3}]
    # The search items of the study are untouched by all this.
    assert rows(engine, "SELECT waiting, claims FROM work_counts WHERE kind = 'search'") == [{"waiting": 2, "claims": 0}]


def test_stalled_trial_is_failed_and_retried(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    """Heartbeats keep coming but the step counter never moves: failed after the stall timeout, retried."""
    one_study(initialised_db, trials=1, limits=LimitsSpec(stall_timeout_s=3, time_limit_s=3600))
    stuck = start_worker(
        initialised_db, "--synthetic", "600", "--synthetic-stall", "--max-trials", "1", "--worker-id", "stuck", *CALM, log_dir=tmp_path
    )
    try:
        # Its heartbeat thread is alive all along and reaps its own stalled attempt, which then stops.
        assert stuck.wait(timeout=90) == 0
    finally:
        if stuck.poll() is None:
            stuck.kill()
    healthy = start_worker(initialised_db, "--synthetic", "0.2", "--worker-id", "healthy", *CALM, log_dir=tmp_path)
    assert finish([healthy]) == [0]
    got = rows(engine, "SELECT attempt, state, reason, worker, late_result IS NOT NULL AS late FROM attempts ORDER BY attempt")
    assert [(g["attempt"], g["state"], g["worker"]) for g in got] == [(1, "FAIL", "stuck"), (2, "COMPLETE", "healthy")]
    assert got[0]["reason"] == "stalled: no optimizer step for 3 s"
    assert got[0]["late"]  # the stuck worker's own report came after the reap: kept, not counted
    assert_targets_met_exactly(engine)
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "was reaped while it ran" in logs and "late result" in logs and "Traceback" not in logs


def test_trial_past_its_wall_clock_limit_times_out(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    one_study(initialised_db, trials=1, limits=LimitsSpec(stall_timeout_s=3600, time_limit_s=3))
    slow = start_worker(initialised_db, "--synthetic", "600", "--worker-id", "slow", "--max-retry", "0", *CALM, log_dir=tmp_path)
    try:
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM attempts WHERE state = 'FAIL'") == 1, 90, "the time-out")
        assert slow.wait(timeout=60) == 0  # nothing left to run: no retry allowed
    finally:
        if slow.poll() is None:
            slow.kill()
    assert rows(engine, "SELECT state, reason FROM attempts") == [{"state": "FAIL", "reason": "timeout after 3 s"}]
    assert rows(engine, "SELECT state, outcome FROM work_items") == [{"state": "finished", "outcome": "FAIL"}]
    assert rows(engine, "SELECT state, reason FROM trial_records") == [{"state": "FAIL", "reason": "timeout after 3 s"}]


def test_reap_refuses_a_grace_period_not_longer_than_the_heartbeat(capsys: pytest.CaptureFixture[str], initialised_db: str) -> None:
    code, out, err = run_cli(capsys, "--database-url", initialised_db, "reap", "--grace-period", "2")  # workers beat every 5 s
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "grace period 2 s is not longer than the heartbeat interval 5 s" in err


def test_workers_in_another_time_zone_reap_by_the_database_clock(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    one_study(initialised_db, trials=3)
    env_tz = {**os.environ, "TZ": "America/New_York", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "worker.cli", "--database-url", initialised_db, "--synthetic", "1.5", *FAST]
    logs = [open(tmp_path / f"tz-{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen([*cmd, "--worker-id", f"ny{i}"], cwd=REPO, env=env_tz, stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    wait_for(lambda: (scalar(engine, "SELECT count(*) FROM attempts WHERE state = 'RUNNING'") or 0) >= 1, 60, "a claim")
    victim_id = rows(engine, "SELECT worker FROM attempts WHERE state = 'RUNNING' LIMIT 1")[0]["worker"]
    victim = procs[int(victim_id[-1])]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = procs[1 - int(victim_id[-1])]
    assert survivor.wait(timeout=120) == 0
    reasons = [r["reason"] for r in rows(engine, "SELECT reason FROM attempts WHERE state = 'FAIL'")]
    assert reasons == [f"lost: no heartbeat for over 3 s ({victim_id})"]  # only the dead worker's, never a live one's
    assert_targets_met_exactly(engine)


def test_reader_role_cannot_block_a_claim(engine: sa.Engine, initialised_db: str) -> None:
    one_study(initialised_db, trials=2)
    reader = sa.create_engine(
        make_url(initialised_db).set(username=roles.READER_ROLE, password=None), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    storage = optuna_adapter.open_storage(initialised_db)
    try:
        with reader.connect() as conn:
            # Every lock a read-only role might try: advisory locks are no part of a claim, row locks need UPDATE.
            conn.exec_driver_sql("SELECT pg_advisory_lock(k1, k2) FROM generate_series(0, 3) k1, generate_series(0, 200) k2")  # any study id
            conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")  # its default is no barrier
            for sql in ("SELECT * FROM study_specs FOR UPDATE", "SELECT * FROM work_items FOR SHARE", "DO $$ BEGIN LOCK TABLE work_items IN EXCLUSIVE MODE; END $$"):
                with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                    conn.exec_driver_sql(sql)
            started = time.monotonic()
            claimed = claims.claim_next(storage.engine, storage, claims.load_studies(storage.engine), claims.Who("w", "h", "cpu", "v"))
            assert isinstance(claimed, claims.ClaimedItem) and time.monotonic() - started < 10
    finally:
        reader.dispose()
        storage.engine.dispose()


def test_synthetic_worker_never_imports_torch(initialised_db: str) -> None:
    """`worker --synthetic` runs its whole loop without torch: 64 of them fit on a small machine."""
    one_study(initialised_db, trials=1)
    code = (
        "import sys; from worker.cli import main\n"
        "try:\n    main(['--database-url', sys.argv[1], '--synthetic', '0', '--heartbeat-interval', '1', '--grace-period', '20'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('no torch')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, initialised_db], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no torch" in done.stdout


def test_optuna_floor_is_the_tested_one() -> None:
    """pyproject's floor is what we test; an older Optuna than the floor fails here."""
    import optuna

    pinned = re.search(r'"optuna>=([0-9.]+),<([0-9]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned, "pyproject pins optuna as >=FLOOR,<NEXT_MAJOR"
    floor, ceiling = pinned.group(1), int(pinned.group(2))
    assert floor == optuna_adapter.OPTUNA_FLOOR
    version = tuple(int(p) for p in re.findall(r"\d+", optuna.__version__)[:2])
    assert version >= tuple(int(p) for p in floor.split(".")), f"optuna {optuna.__version__} is below the tested floor {floor}"
    assert version[0] < ceiling


PRIVATE_OR_EXPERIMENTAL = [
    r"\._trial_id\b", r"\._study_id\b", r"\._storage\b", r"\._max_retry\b", r"_thread_local",
    r"fail_stale_trials", r"RetryHeartbeatStaleTrialCallback", r"heartbeat_stale_trial_callback", r"record_heartbeat",
    r"heartbeat_interval\s*=\s*.*RDBStorage", r"ExperimentalWarning", r"retry_history", r"trial_heartbeats",
    r"set_trial_state_values", r"set_trial_user_attr\b",
]
OPTUNA_TABLE_WRITES = r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(trials|trial_values|trial_params|trial_heartbeats|studies|trial_system_attributes|trial_user_attributes|trial_intermediate_values)\b"


def test_no_private_or_experimental_optuna_api_and_no_writes_into_its_tables() -> None:
    found = []
    for folder in ("coordinator", "worker", "sql", "bench"):
        for path in (REPO / folder).rglob("*"):
            # Migrations read the previous release's data (its retry_history) to move it into the ledger.
            if path.suffix not in (".py", ".sql") or "migrations" in path.parts:
                continue
            text = path.read_text()
            for pattern in [*PRIVATE_OR_EXPERIMENTAL, OPTUNA_TABLE_WRITES]:
                for m in re.finditer(pattern, text, flags=re.IGNORECASE if pattern == OPTUNA_TABLE_WRITES else 0):
                    found.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert found == []
    # Only the adapter imports optuna for the trial lifecycle.
    importers = {p.name for p in (REPO / "coordinator" / "lifecycle").glob("*.py") if re.search(r"^\s*import optuna|^\s*from optuna", p.read_text(), re.M)}
    assert importers == {"optuna_adapter.py"}
    assert not re.search(r"^\s*(import optuna|from optuna)", (REPO / "worker" / "loop.py").read_text(), re.M)


def test_study_extend_and_cancel_are_amendments(engine: sa.Engine, initialised_db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one_study(initialised_db, trials=2)
    spec_before = rows(engine, "SELECT spec, spec_sha256, target_trials FROM study_specs")
    code, out, _ = run_cli(capsys, "--database-url", initialised_db, "study", "extend", STUDY, "--trials", "3")
    assert code == 0 and f"study {STUDY}: target 2 -> 3 (1 slots added)" in out
    code, _, err = run_cli(capsys, "--database-url", initialised_db, "study", "extend", STUDY, "--trials", "3")
    assert code == 2 and "must be larger" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "--database-url", initialised_db, "study", "cancel", "nope")
    assert code == 2 and "no study named 'nope'" in err
    assert rows(engine, "SELECT spec, spec_sha256, target_trials FROM study_specs") == spec_before  # never a silent spec change
    worker = start_worker(initialised_db, "--synthetic", "0", "--max-trials", "1", *CALM, log_dir=tmp_path)
    assert finish([worker]) == [0]
    code, out, _ = run_cli(capsys, "--database-url", initialised_db, "study", "cancel", STUDY)
    assert code == 0 and f"study {STUDY}: 2 waiting trial(s) cancelled" in out
    amendments = rows(engine, "SELECT action, detail, amended_at FROM study_amendments ORDER BY amendment_id")
    assert [(a["action"], a["detail"]) for a in amendments] == [("extend", {"from": 2, "to": 3}), ("cancel", {"cancelled": 2})]
    assert all(a["amended_at"] is not None for a in amendments)
    assert rows(engine, "SELECT target_trials, complete, cancelled, remaining FROM study_progress") == [
        {"target_trials": 1, "complete": 1, "cancelled": 2, "remaining": 0}
    ]
    # The finished trial stays queryable; a synthetic result is marked and kept off the leaderboard.
    assert rows(engine, "SELECT state, synthetic FROM trial_results WHERE state <> 'WAITING'") == [{"state": "COMPLETE", "synthetic": True}]
    assert rows(engine, "SELECT count(*) AS n FROM leaderboard") == [{"n": 0}]
    assert rows(engine, "SELECT count(*) AS n FROM leaderboard_synthetic") == [{"n": 1}]


def test_a_large_target_is_enqueued_in_batches(engine: sa.Engine, initialised_db: str) -> None:
    one_study(initialised_db, trials=1)
    with engine.begin() as conn:
        assert ledger.extend_search(conn, STUDY, 20_001) == 20_000  # more rows than one statement's parameters allow
    assert rows(engine, "SELECT slots, waiting FROM work_counts") == [{"slots": 20_001, "waiting": 20_001}]


def test_the_sampler_uses_one_experimental_argument_and_only_that_one() -> None:
    """`group` is experimental in the tested Optuna range; if a release drops or changes it, or makes
    another argument we use experimental, this fails before a study samples differently."""
    import warnings

    import optuna

    from coordinator.studies.spec import tpe_sampler

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = tpe_sampler(7)
    experimental = sorted(str(w.message) for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning))
    assert len(experimental) == 1 and "``group``" in experimental[0], experimental
    assert isinstance(sampler, optuna.samplers.TPESampler)

