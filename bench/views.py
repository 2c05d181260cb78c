"""How fast the SQL read model answers with many trials stored (the goal: every view < 1 s at 100k).

    .venv/bin/python bench/views.py [--trials 100000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database, runs `db init`, bulk-inserts ledger rows (items, attempts, records, epochs) with plain SQL (INSERT ... SELECT
generate_series: seconds, not the hours Optuna's API would take), then times each view with
EXPLAIN ANALYZE, and drops the database. `prefill()` is also used by bench/coordination.py to put
1k/10k/100k finished trials in the database before the workers start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.store import engines, schema  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EPOCHS_PER_TRIAL = 10

# Queries a researcher runs; each must answer in well under a second at 100k trials.
QUERIES = {
    "trial_results (all rows)": "SELECT * FROM trial_results",
    "trial_results (one study)": "SELECT * FROM trial_results WHERE study_name = :study",
    "study_progress": "SELECT * FROM study_progress",
    "study_progress (one study)": "SELECT * FROM study_progress WHERE study_name = :study",
    "leaderboard": "SELECT * FROM leaderboard",
    "learning_curves (one trial)": "SELECT * FROM learning_curves WHERE study_name = :study AND trial_number = 8",
    "failures by reason": (
        "SELECT study_name, reason, count(*) FROM trial_results WHERE state = 'FAIL' GROUP BY 1, 2"
    ),
}


def create_bare_study(conn: sa.Connection, url: str, name: str, *, target: int, direction: str = "maximize") -> int:
    """An Optuna study (its public API) plus its study_specs row written directly (no dataset needed)."""
    import optuna

    storage = engines.optuna_storage(url)
    try:
        optuna.create_study(study_name=name, storage=storage, direction=direction)
    finally:
        storage.engine.dispose()
    study_id = conn.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}).scalar_one()
    spec = {"name": name, "note": "bench study written with plain SQL"}
    conn.execute(
        sa.text(
            """
            INSERT INTO study_specs (study_name, study_id, budget, budget_params, horizon, dataset_name,
                dataset_version, dataset_sha256, objective, direction, target_trials, spec, spec_sha256, code_version)
            VALUES (:n, :s, '2M', 2000000, :h, 'bench', 1, 'none', :obj, :dir, :target,
                CAST(:spec AS jsonb), 'none', 'bench')
            """
        ),
        {
            "n": name,
            "s": study_id,
            "h": 1 + study_id % 3,
            "obj": "val_auc" if direction == "maximize" else "val_loss",
            "dir": direction,
            "target": target,
            "spec": json.dumps(spec),
        },
    )
    return study_id


def prefill(url: str, n_trials: int, *, n_studies: int = 12, prefix: str = "history") -> list[str]:
    """Store n_trials finished trials (ledger rows, records and epochs) over n_studies full studies.

    The mix looks like a real sweep: ~85% COMPLETE, ~10% PRUNED, ~5% FAIL of which half were
    retried (a second attempt of the same item), and a few RUNNING. The ledger rows are written
    with plain SQL; their trial ids are the bench's own (the read model never reads Optuna's
    tables). Returns the study names.
    """
    engine = engines.make_engine(url)
    names = []
    per_study = max(1, n_trials // n_studies)
    try:
        with engine.begin() as conn:
            for i in range(n_studies):
                name = f"{prefix}-{i:03d}"
                create_bare_study(conn, url, name, target=per_study)
                fill_study(conn, name, per_study)
                names.append(name)
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return names


def fill_study(conn: sa.Connection, name: str, n: int) -> None:
    params = {"n": n, "name": name}
    # Item g: RUNNING for the last two, else FAIL (g % 20 = 3), PRUNED (g % 10 = 1) or COMPLETE;
    # every 40th item (g % 40 = 4) failed once and was retried (two attempts).
    conn.execute(
        sa.text(
            """
            INSERT INTO work_items (kind, study_name, slot, state, outcome, attempts_made)
            SELECT 'search', :name, g + 1,
                CASE WHEN g >= :n - 2 THEN 'running' ELSE 'finished' END,
                CASE WHEN g >= :n - 2 THEN NULL WHEN g % 20 = 3 THEN 'FAIL' WHEN g % 10 = 1 THEN 'PRUNED' ELSE 'COMPLETE' END,
                CASE WHEN g % 40 = 4 THEN 2 ELSE 1 END
            FROM generate_series(0, :n - 1) AS g
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            """
            INSERT INTO attempts (item_id, attempt, trial_number, trial_id, worker, host, device, state, reason, value,
                                  n_params, claimed_at, heartbeat_at, progress_at, finished_at)
            SELECT i.item_id, k, 2 * (i.slot - 1) + k - 1, (2 * i.item_id + k)::int, 'w' || i.slot % 64, 'bench', 'cpu',
                CASE WHEN k < i.attempts_made THEN 'FAIL' WHEN i.state = 'running' THEN 'RUNNING' ELSE i.outcome END,
                CASE WHEN k < i.attempts_made THEN 'lost: no heartbeat for over 60 s (w1)' WHEN i.outcome = 'FAIL' THEN 'diverged: loss is nan'
                     WHEN i.outcome = 'PRUNED' THEN 'median pruner' END,
                CASE WHEN k = i.attempts_made AND i.outcome = 'COMPLETE' THEN 0.5 + 0.1 * sin(i.item_id) END,
                1500000 + i.slot % 1000 * 1000,
                now() - make_interval(secs => (:n - i.slot) * 60), now(), now(),
                CASE WHEN i.state = 'finished' OR k < i.attempts_made THEN now() - make_interval(secs => (:n - i.slot) * 60 - 30) END
            FROM work_items i CROSS JOIN generate_series(1, 2) AS k
            WHERE i.study_name = :name AND k <= i.attempts_made
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            """
            INSERT INTO trial_records (trial_id, study_name, trial_number, state, reason, n_params, d_model,
                n_layers, n_heads, d_ff, learning_rate, weight_decay, dropout, epochs_run, best_epoch,
                val_auc, val_loss, duration_s, worker, device, metrics)
            SELECT a.trial_id, :name, a.trial_number, a.state, a.reason,
                a.n_params, 128 * (1 + a.trial_number % 4), 2 + a.trial_number % 6, 8, 512, 1e-4, 0.01, 0.1,
                10, 1 + a.trial_number % 10, a.value, 0.6, 30, a.worker, 'cpu', '{}'::jsonb
            FROM attempts a JOIN work_items i ON i.item_id = a.item_id
            WHERE i.study_name = :name AND a.state <> 'RUNNING'
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            f"""
            INSERT INTO trial_epochs (trial_id, epoch, train_loss, val_loss, val_auc, learning_rate, seconds)
            SELECT a.trial_id, e, 0.7 - 0.01 * e, 0.69 - 0.005 * e, 0.5 + 0.005 * e, 1e-4, 3
            FROM attempts a JOIN work_items i ON i.item_id = a.item_id CROSS JOIN generate_series(1, {EPOCHS_PER_TRIAL}) AS e
            WHERE i.study_name = :name AND a.state <> 'RUNNING'
            """
        ),
        params,
    )


def time_views(url: str, study: str) -> list[tuple[str, float, int]]:
    """(query, execution ms from EXPLAIN ANALYZE, rows) for every query in QUERIES."""
    engine = engines.make_engine(url)
    results = []
    try:
        with engine.connect() as conn:
            for label, sql in QUERIES.items():
                conn.execute(sa.text(sql), {"study": study}).fetchall()  # warm the cache once
                plan = conn.execute(sa.text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), {"study": study}).scalar_one()
                top = plan[0]
                results.append((label, float(top["Execution Time"]), int(top["Plan"]["Actual Rows"])))
    finally:
        engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args()

    with engines.scratch_database(args.admin_url, "bench_views") as url:
        schema.init_db(url)
        start = time.perf_counter()
        names = prefill(url, args.trials, n_studies=args.studies)
        print(f"stored {args.trials} trials ({EPOCHS_PER_TRIAL} epochs each) in {len(names)} studies "
              f"in {time.perf_counter() - start:.1f} s")
        print(f"{'query':<32} {'ms':>9} {'rows':>8}")
        for label, ms, rows in time_views(url, names[0]):
            flag = "" if ms < 1000 else "  <-- over 1 s"
            print(f"{label:<32} {ms:>9.1f} {rows:>8}{flag}")


if __name__ == "__main__":
    main()
