"""Multi-objective studies end to end: created with their directions, told every objective by a
worker, their front shown by the leaderboard and the report, their knee evaluated first; bad objective
lists and pruners refused."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.evaluation.plan import top_configurations
from coordinator.lifecycle import claims
from coordinator.lifecycle.settings import Liveness
from coordinator.reports.front import study_fronts
from tests.data_helpers import run_cli
from tests.service_helpers import create, make_dataset, rows, scalar
from worker.loop import Worker, WorkerOptions

STUDY = "syn-a25-thr1pct-100K-h1"


def test_multi_objective_study_front_and_knee(engine: sa.Engine, initialised_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(initialised_db)
    (plan,) = create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=8, objectives=("val_auc", "n_params"))
    assert plan.spec.directions == ["maximize", "minimize"] and plan.spec.pruner.kind == "none"  # no pruner applies
    worker = Worker(WorkerOptions(url=initialised_db, worker_id="w", synthetic=0.0, liveness=Liveness(1, 20, 2), poll_s=0.05))
    assert worker.run() == 0

    study = optuna.load_study(study_name=STUDY, storage=optuna.storages.RDBStorage(initialised_db))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    records = rows(engine, "SELECT trial_number, val_auc, n_params, metrics -> 'objective_values' AS v FROM trial_records WHERE state = 'COMPLETE'")
    assert len(records) == 8 and all(r["v"] == [r["val_auc"], r["n_params"]] for r in records)  # what Optuna was told
    assert all(study.trials[r["trial_number"]].values == r["v"] for r in records)
    (shown,) = study_fronts(engine)
    assert shown.synthetic and sorted(p.key for p in shown.front) == sorted(t.number for t in study.best_trials)

    # As if trained (synthetic results are never evaluated nor shown as results): the knee goes first.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE attempts SET synthetic = false"))
        conn.execute(sa.text("UPDATE trial_records SET metrics = metrics || '{\"synthetic\": false}'"))
    entry = next(e for e in claims.load_studies(engine) if e.name == STUDY)
    assert top_configurations(engine, entry, 3)[0]["trial_number"] == shown.knee.key
    code, out, _ = run_cli(capsys, "--database-url", initialised_db, "leaderboard")
    assert code == 0 and f"Pareto front of {STUDY}" in out and "knee: evaluated first" in out
    code, _, _ = run_cli(capsys, "--database-url", initialised_db, "report", "--out", str(tmp_path / "r"))
    assert code == 0 and f"Pareto front of {STUDY}" in (tmp_path / "r" / "index.html").read_text()


def test_bad_objectives_and_pruners_are_refused(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    cases = [
        ({"objectives": ("val_auc", "latency")}, "unknown objective 'latency' after the first; choose from n_params, s_per_epoch"),
        ({"objectives": ("n_params", "val_auc")}, "unknown objective 'n_params': the first objective is one of val_auc, val_loss"),
        ({"objectives": ("val_auc", "n_params"), "pruner": "asha"}, "--pruner asha does not apply to multi-objective studies"),
        ({"objectives": ("val_auc", "n_params", "n_params")}, "--objectives lists an objective twice"),
        ({"pruner": "bohb"}, "unknown pruner 'bohb'; choose one of none, median, asha, hyperband"),
    ]
    for request, message in cases:
        with pytest.raises(UserError) as refused:
            create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), **request)
        assert message in str(refused.value)
    assert scalar(engine, "SELECT count(*) FROM study_specs") == 0 and scalar(engine, "SELECT count(*) FROM studies") == 0


def test_cli_refuses_unknown_pruner_and_objective_in_one_line(initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--database-url", initialised_db, "create-studies", "--pruner", "bohb")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'bohb' is not one of" in err
    code, _, err = run_cli(capsys, "--database-url", initialised_db, "create-studies", "--objectives", "val_auc,latency")
    assert code == 2 and err.strip() == "error: unknown objective 'latency' after the first; choose from n_params, s_per_epoch"
