"""The evaluation end to end on a real PostgreSQL: protocol and walk-forward folds frozen and
immutable, runs re-trained per fold by the trial recipe and stored, each test day scored once by the
model trained before its fold, pooled verdicts, per-fold scores and the model comparison stored,
views readable by the read-only role; a study evaluated under the single-period protocol of earlier
releases still reads and is reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

import numpy as np
from rich.console import Console

from coordinator.data.folds import Fold, cut_folds, day_index
from coordinator.data.splits import Splits
from coordinator.errors import UserError
from coordinator.evaluation.plan import payloads, record_protocol, runs_done
from coordinator.studies.samples import load_study_samples
from coordinator.evaluation.protocol import BootstrapSpec, EvaluationProtocol, default_seeds, make_protocol
from coordinator.reports.answer import print_answer
from coordinator.studies.metrics import roc_auc
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import load_studies
from coordinator.lifecycle.settings import Liveness
from coordinator.reports.html import write_report
from coordinator.reports.queries import leaderboard
from coordinator.store import roles
from tests.data_helpers import run_cli
from tests.service_helpers import create, make_dataset, rows

torch = pytest.importorskip("torch")
from worker.evaluate import EvaluationRefused, evaluate_run  # noqa: E402
from worker.loop import Worker, WorkerOptions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def searched(url: str, trials: int = 3) -> str:
    """One smoke study (10K parameters: seconds per trial) on a synthetic market, searched for real."""
    dataset = make_dataset(url, days=2500)
    create(url, dataset=dataset, preset="smoke", budgets=("10K",), horizons=(1,), trials=trials)
    options = WorkerOptions(url=url, worker_id="searcher", device="cpu", liveness=Liveness(1, 20, 2), poll_s=0.1)
    assert Worker(options).run() == 0
    return dataset


def test_protocol_is_frozen_and_immutable(engine: sa.Engine, initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    searched(initialised_db)
    entry = load_studies(engine)[0]
    # The dry run writes nothing and projects from the study's own measured trials.
    code, out, err = run_cli(capsys, "--database-url", initialised_db, "evaluate", "--preset", "smoke", "--k", "2", "--dry-run",
                             "--target-width", "0.05")
    assert code == 0, err
    measured = rows(engine, "SELECT count(*) AS n FROM attempts WHERE state = 'COMPLETE'")[0]["n"]
    line = next(line for line in out.splitlines() if entry.name in line)
    cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
    assert cells[:5] == [entry.name, "10K", "1", str(2 * 2 * 3), str(measured)]  # budget, H, k x S x F runs, trials measured
    assert cells[7].endswith(" h")  # measured trials: a projected device time
    assert "projected device time" in out and "no evaluated answer yet" in out
    assert rows(engine, "SELECT count(*) AS n FROM evaluation_protocols")[0]["n"] == 0
    protocol = make_protocol("smoke", k=2, n_seeds=2)
    first = record_protocol(engine, entry, protocol)
    assert first.status == "new" and [c["rank"] for c in first.configurations] == [1, 2]
    objectives = [c["objective"] for c in first.configurations]
    assert objectives == sorted(objectives, reverse=True)  # val_auc is maximised: best first
    best = rows(engine, "SELECT trial_number FROM leaderboard WHERE study_name = :s", s=entry.name)[0]["trial_number"]
    assert first.configurations[0]["trial_number"] == best
    again = record_protocol(engine, entry, make_protocol("smoke", k=2, n_seeds=2))
    assert again.status == "unchanged" and again.configurations == first.configurations
    items = payloads(first)
    assert len(items) == 2 * 2 * 3 and len({i["slot"] for i in items}) == 12  # k x S x F
    assert sorted({i["fold"] for i in items}) == [1, 2, 3]
    # The folds are frozen with the protocol: the study's test split cut as `cut_folds` cuts it.
    samples = load_study_samples(engine, entry.spec)
    expected = cut_folds(samples.dates, Splits.from_dict(entry.spec.splits), 3, entry.spec.horizon, entry.spec.context)
    stored = rows(engine, "SELECT folds FROM evaluation_protocols")[0]["folds"]
    assert [Fold.from_dict(f) for f in stored] == expected == first.folds == again.folds
    for change in ({"n_seeds": 3}, {"folds": 4}):
        with pytest.raises(UserError, match="already evaluated under another protocol"):
            record_protocol(engine, entry, make_protocol("smoke", k=2, **({"n_seeds": 2} | change)))
    assert rows(engine, "SELECT count(*) AS n FROM evaluation_protocols")[0]["n"] == 1


def test_runs_verdict_views_and_report(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    searched(initialised_db, trials=2)
    entry = load_studies(engine)[0]
    evaluation = record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=1, folds=2))
    items = payloads(evaluation)
    assert [i["fold"] for i in items] == [1, 2]
    first = evaluate_run(engine, items[0], worker="t", item_id=11, attempt_id=12)
    assert runs_done(engine, [entry.name]) == {entry.name: 1}
    # A partial evaluation gives no configuration yet, and says so.
    partial = compute_verdicts(engine, entry.spec.dataset.name)
    assert partial[0].missing_runs == 1 and not partial[0].verdict.configs
    assert "not finished yet" in " ".join(partial[0].verdict.notes)

    again = evaluate_run(engine, items[0], worker="t2")  # a retried attempt replaces its row
    assert again["test_predictions"] == first["test_predictions"]  # the trial recipe is deterministic on CPU
    evaluate_run(engine, items[1])
    stored = rows(engine, "SELECT fold, best_epoch, epochs_run, max_epochs, worker, test_positions, test_predictions, "
                          "jsonb_array_length(epochs) AS curve FROM evaluation_runs ORDER BY fold")
    assert [r["fold"] for r in stored] == [1, 2] and stored[0]["worker"] == "t2"
    assert all(r["curve"] == r["epochs_run"] and 1 <= r["best_epoch"] <= r["epochs_run"] <= r["max_epochs"] for r in stored)
    # No test day predicted twice, none by a model trained after it: every scored day lies after its
    # fold's training and early-stopping periods, and the folds' days are disjoint and consecutive.
    samples = load_study_samples(engine, entry.spec)
    pooled = [t for r in stored for t in r["test_positions"]]
    assert len(set(pooled)) == len(pooled) and pooled == list(range(pooled[0], pooled[-1] + 1))
    for r, fold in zip(stored, evaluation.folds, strict=True):
        assert min(r["test_positions"]) > day_index(samples.dates, fold.early_stopping[1], side="right") - 1
    assert pooled[0] == day_index(samples.dates, entry.spec.splits["test"][0])

    verdicts = compute_verdicts(engine, entry.spec.dataset.name)
    assert len(verdicts) == 1 and verdicts[0].missing_runs == 0 and verdicts[0].walk_forward is not None
    v = verdicts[0].verdict
    assert len(v.configs) == 1 and v.configs[0].chosen and v.n_test == len(pooled) and v.block_length >= 1
    assert {b.model for b in v.baselines} == {"logistic_regression", "gradient_boosting", "volatility", "base_rate"}
    store_verdicts(engine, verdicts)
    store_verdicts(engine, verdicts)  # idempotent: replaced, not duplicated

    reader = sa.create_engine(sa.engine.make_url(initialised_db).set(username=roles.READER_ROLE), poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            read = {view: [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {view}"))]
                    for view in ("final_results", "scaling", "fold_results", "model_comparison")}
    finally:
        reader.dispose()
    assert len(read["final_results"]) == 1 and len(read["scaling"]) == 1
    f, s = read["final_results"][0], read["scaling"][0]
    assert f["study_name"] == entry.name and f["chosen"] and f["n_seeds"] == 1
    assert f["test_auc_low"] <= f["test_auc"] <= f["test_auc_high"]
    labels = samples.labels[pooled]
    assert f["test_auc"] == pytest.approx(roc_auc(labels, np.concatenate([r["test_predictions"] for r in stored])))
    assert s["horizon"] == 1 and s["slope_per_decade"] is None and "one model size only at H = 1" in s["sentence"]
    assert s["protocol"] == "walk-forward" and s["n_folds"] == 2 and s["n_pooled_days"] == len(pooled)
    assert s["block_length"] == v.block_length and s["mde_vs_baseline"] > 0 and 0 <= s["spa_pvalue"] <= 1
    assert s["folds_won"] in (0, 1, 2) and f"in {s['folds_won']} of 2 folds" in s["sentence"]
    assert "would have been detected" in s["sentence"] and set(s["mcs"]) <= {entry.name, *(b.model for b in v.baselines)}
    assert s["best_baseline"] in ("logistic_regression", "gradient_boosting", "volatility")
    assert any("intervals are wide" in n for n in s["notes"])
    folds = read["fold_results"]
    assert len(folds) == 2 * 5 and {r["fold"] for r in folds} == {1, 2}  # the answer and 4 baselines, per fold
    assert sum(r["n_days"] for r in folds if r["kind"] == "study") == len(pooled)
    assert sum(bool(r["beats_best_baseline"]) for r in folds if r["kind"] == "study") == s["folds_won"]
    models = {r["model"]: r for r in read["model_comparison"]}
    assert set(models) == {entry.name, "logistic_regression", "gradient_boosting", "volatility", "base_rate"}
    assert models[entry.name]["auc"] == pytest.approx(f["test_auc"]) and models[entry.name]["spa_pvalue"] == s["spa_pvalue"]
    assert all(sum(b["count"] for b in m["reliability"]) == len(pooled) for m in models.values())

    # The answer in the terminal and the report: the per-fold table, the comparison and calibration.
    console = Console(record=True, width=200)
    assert print_answer(engine, entry.spec.dataset.name, entry.spec.dataset.version, console)
    text = console.export_text()
    assert "AUC per walk-forward fold" in text and "in 90% MCS" in text and f"{len(pooled)} test days pooled over 2" in text
    index = write_report(engine, tmp_path / "report", entry.spec.dataset.name)
    page = index.read_text()
    assert "The answer on" in page and s["sentence"].split(":")[0] in page and "Model comparison on the pooled days" in page
    for figure in ("test_auc_vs_params.png", "evaluation_curves.png", "auc_per_fold.png", "calibration.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 0
    board = leaderboard(engine)
    assert board[0]["test_auc"] == pytest.approx(f["test_auc"]) and board[0]["test_auc_ci"].startswith(f"{f['test_auc']:.3f} [")
    # A second dataset: a report without --dataset is refused, never mixed.
    other = make_dataset(initialised_db, days=2500, seed=1, symbol="OTHER")
    create(initialised_db, dataset=other, preset="smoke", budgets=("100K",), horizons=(1,), trials=1)
    with pytest.raises(UserError, match="datasets"):
        write_report(engine, tmp_path / "mixed")
    with pytest.raises(UserError, match="one dataset"):
        write_report(engine, tmp_path / "mixed", "all")


def test_a_study_evaluated_under_the_single_period_protocol_still_reads(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    searched(initialised_db, trials=1)
    entry = load_studies(engine)[0]
    # What earlier releases froze: no folds, the fixed block length of 20 days.
    single = EvaluationProtocol(k=1, seeds=default_seeds(1), bootstrap=BootstrapSpec(replicates=200))
    evaluation = record_protocol(engine, entry, single)
    items = payloads(evaluation)
    assert evaluation.folds == [] and len(items) == 1 and "fold" not in items[0]
    run = evaluate_run(engine, items[0])
    samples = load_study_samples(engine, entry.spec)
    assert run["fold"] == 0 and run["test_positions"] == samples.index["test"].tolist()  # the whole test split, once
    verdicts = compute_verdicts(engine, entry.spec.dataset.name)
    assert verdicts[0].walk_forward is None and verdicts[0].verdict.block_length == 20
    store_verdicts(engine, verdicts)
    s = rows(engine, "SELECT * FROM scaling")[0]
    assert s["protocol"] == "single-period" and s["n_folds"] is None and s["mde_slope"] is None
    assert any("single-period protocol" in n for n in s["notes"]) and "walk-forward" not in s["sentence"]
    assert rows(engine, "SELECT count(*) AS n FROM fold_results")[0]["n"] == 0
    console = Console(record=True, width=200)
    assert print_answer(engine, entry.spec.dataset.name, entry.spec.dataset.version, console)
    assert "one test period (single-period protocol)" in console.export_text()
    assert "single-period protocol" in write_report(engine, tmp_path / "report", entry.spec.dataset.name).read_text()
    # Its protocol is immutable: a walk-forward evaluation of the same study is refused, nothing changes.
    with pytest.raises(UserError, match="single-period protocol"):
        record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=1))
    assert rows(engine, "SELECT count(*) AS n FROM evaluation_runs")[0]["n"] == 1


def test_a_run_of_another_protocol_is_refused(engine: sa.Engine, initialised_db: str) -> None:
    searched(initialised_db, trials=1)
    entry = load_studies(engine)[0]
    evaluation = record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=1))
    item = payloads(evaluation)[0] | {"protocol_sha256": "0" * 64}
    with pytest.raises(EvaluationRefused, match="evaluated under protocol"):
        evaluate_run(engine, item)
    assert runs_done(engine, [entry.name]) == {entry.name: 0}
