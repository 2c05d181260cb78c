"""How fast the SQL read model answers with many trials stored (SPEC 4: every view < 1 s at 100k).

    .venv/bin/python bench/views.py [--trials 100000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database, runs `db init`, bulk-inserts trials with plain SQL (INSERT ... SELECT
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

from coordinator import db  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EPOCHS_PER_TRIAL = 10

# Queries a researcher runs; each must answer in well under a second at 100k trials.
QUERIES = {
    "trial_results (all rows)": "SELECT * FROM trial_results",
    "trial_results (one study)": "SELECT * FROM trial_results WHERE study_name = :study",
    "study_progress": "SELECT * FROM study_progress",
    "study_progress (one study)": "SELECT * FROM study_progress WHERE study_name = :study",
    "leaderboard": "SELECT * FROM leaderboard",
    "learning_curves (one trial)": "SELECT * FROM learning_curves WHERE study_name = :study AND trial_number = 7",
    "failures by reason": (
        "SELECT study_name, reason, count(*) FROM trial_results WHERE state = 'FAIL' GROUP BY 1, 2"
    ),
}


def create_bare_study(conn: sa.Connection, name: str, *, target: int, direction: str = "maximize") -> int:
    """An Optuna study plus its study_specs row, written directly (no dataset needed)."""
    study_id = conn.execute(sa.text("INSERT INTO studies (study_name) VALUES (:n) RETURNING study_id"), {"n": name}).scalar_one()
    conn.execute(
        sa.text("INSERT INTO study_directions (direction, study_id, objective) VALUES (CAST(:d AS studydirection), :s, 0)"),
        {"d": direction.upper(), "s": study_id},
    )
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
    """Store n_trials finished trials (with records, values and epochs) over n_studies full studies.

    The mix looks like a real sweep: ~85% COMPLETE, ~10% PRUNED, ~5% FAIL of which half were
    retried (each retried FAIL has a later trial carrying Optuna's retry_history), and a few
    RUNNING. Returns the study names.
    """
    engine = db.make_engine(url)
    names = []
    per_study = max(1, n_trials // n_studies)
    try:
        with engine.begin() as conn:
            for i in range(n_studies):
                name = f"{prefix}-{i:03d}"
                study_id = create_bare_study(conn, name, target=per_study)
                fill_study(conn, study_id, name, per_study)
                names.append(name)
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return names


def fill_study(conn: sa.Connection, study_id: int, name: str, n: int) -> None:
    params = {"s": study_id, "n": n, "name": name}
    conn.execute(
        sa.text(
            """
            INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete)
            SELECT g, :s,
                CAST(CASE WHEN g % 20 = 3 THEN 'FAIL' WHEN g % 10 = 1 THEN 'PRUNED'
                          WHEN g >= :n - 2 THEN 'RUNNING' ELSE 'COMPLETE' END AS trialstate),
                now() - make_interval(secs => (:n - g) * 60),
                CASE WHEN g < :n - 2 THEN now() - make_interval(secs => (:n - g) * 60 - 30 - g % 17) END
            FROM generate_series(0, :n - 1) AS g
            """
        ),
        params,
    )
    # Half of the FAIL trials were retried: the retry is the trial 1 after it (which is COMPLETE
    # or PRUNED by construction above), carrying Optuna's retry bookkeeping.
    conn.execute(
        sa.text(
            """
            INSERT INTO trial_system_attributes (trial_id, key, value_json)
            SELECT r.trial_id, k.key, CASE k.key WHEN 'failed_trial' THEN (r.number - 1)::text
                                                  ELSE '[' || (r.number - 1) || ']' END
            FROM trials r CROSS JOIN (VALUES ('failed_trial'), ('retry_history')) AS k(key)
            WHERE r.study_id = :s AND r.number % 40 = 4
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            """
            INSERT INTO trial_values (trial_id, objective, value, value_type)
            SELECT trial_id, 0, 0.5 + 0.1 * sin(trial_id), 'FINITE'
            FROM trials WHERE study_id = :s AND state IN ('COMPLETE', 'PRUNED')
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
            SELECT trial_id, :name, number, state::text,
                CASE state WHEN 'FAIL' THEN 'diverged: loss is nan' WHEN 'PRUNED' THEN 'median pruner' END,
                1500000 + number % 1000 * 1000, 128 * (1 + number % 4), 2 + number % 6, 8, 512, 1e-4, 0.01, 0.1,
                10, 1 + number % 10, 0.5 + 0.1 * sin(trial_id), 0.6, 30, 'w' || number % 64, 'cpu', '{}'::jsonb
            FROM trials WHERE study_id = :s AND state IN ('COMPLETE', 'PRUNED', 'FAIL')
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            f"""
            INSERT INTO trial_epochs (trial_id, epoch, train_loss, val_loss, val_auc, learning_rate, seconds)
            SELECT t.trial_id, e, 0.7 - 0.01 * e, 0.69 - 0.005 * e, 0.5 + 0.005 * e, 1e-4, 3
            FROM trials t CROSS JOIN generate_series(1, {EPOCHS_PER_TRIAL}) AS e
            WHERE t.study_id = :s AND t.state <> 'RUNNING'
            """
        ),
        params,
    )


def time_views(url: str, study: str) -> list[tuple[str, float, int]]:
    """(query, execution ms from EXPLAIN ANALYZE, rows) for every query in QUERIES."""
    engine = db.make_engine(url)
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

    with db.scratch_database(args.admin_url, "bench_views") as url:
        db.init_db(url)
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
