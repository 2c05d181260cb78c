"""The evaluation end to end on a real PostgreSQL: protocol frozen and immutable, runs re-trained by
the trial recipe and stored, verdicts stored, views readable by the read-only role."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.evaluation.plan import payloads, record_protocol, runs_done
from coordinator.evaluation.protocol import make_protocol
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import load_studies
from coordinator.lifecycle.settings import Liveness
from coordinator.reports.html import write_report
from coordinator.reports.queries import leaderboard
from coordinator.store import roles
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


def test_protocol_is_frozen_and_immutable(engine: sa.Engine, initialised_db: str) -> None:
    searched(initialised_db)
    entry = load_studies(engine)[0]
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
    assert len(items) == 4 and len({i["slot"] for i in items}) == 4
    with pytest.raises(UserError, match="already evaluated under another protocol"):
        record_protocol(engine, entry, make_protocol("smoke", k=2, n_seeds=3))
    assert rows(engine, "SELECT count(*) AS n FROM evaluation_protocols")[0]["n"] == 1


def test_runs_verdict_views_and_report(engine: sa.Engine, initialised_db: str, tmp_path: Path) -> None:
    searched(initialised_db, trials=2)
    entry = load_studies(engine)[0]
    evaluation = record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=2))
    items = payloads(evaluation)
    first = evaluate_run(engine, items[0], worker="t", item_id=11, attempt_id=12)
    assert runs_done(engine, [entry.name]) == {entry.name: 1}
    # A partial evaluation gives no configuration yet, and says so.
    partial = compute_verdicts(engine, entry.spec.dataset.name)
    assert partial[0].missing_runs == 1 and not partial[0].verdict.configs
    assert "not finished yet" in " ".join(partial[0].verdict.notes)

    again = evaluate_run(engine, items[0], worker="t2")  # a retried attempt replaces its row
    assert again["test_predictions"] == first["test_predictions"]  # the trial recipe is deterministic on CPU
    evaluate_run(engine, items[1])
    stored = rows(engine, "SELECT seed, best_epoch, epochs_run, max_epochs, test_auc, worker, cardinality(test_predictions) AS n, "
                          "jsonb_array_length(epochs) AS curve FROM evaluation_runs ORDER BY seed")
    assert [r["seed"] for r in stored] == [i["seed"] for i in items] and stored[0]["worker"] == "t2"
    assert all(r["curve"] == r["epochs_run"] and 1 <= r["best_epoch"] <= r["epochs_run"] <= r["max_epochs"] for r in stored)

    verdicts = compute_verdicts(engine, entry.spec.dataset.name)
    assert len(verdicts) == 1 and verdicts[0].missing_runs == 0
    v = verdicts[0].verdict
    assert len(v.configs) == 1 and v.configs[0].chosen and v.block_length == 20
    assert {b.model for b in v.baselines} == {"logistic_regression", "gradient_boosting", "volatility", "base_rate"}
    store_verdicts(engine, verdicts)
    store_verdicts(engine, verdicts)  # idempotent: replaced, not duplicated

    reader = sa.create_engine(sa.engine.make_url(initialised_db).set(username=roles.READER_ROLE), poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            final = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM final_results"))]
            scaling = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM scaling"))]
    finally:
        reader.dispose()
    assert len(final) == 1 and len(scaling) == 1
    f, s = final[0], scaling[0]
    assert f["study_name"] == entry.name and f["chosen"] and f["n_seeds"] == 2
    assert f["test_auc_low"] <= f["test_auc"] <= f["test_auc_high"]
    assert f["test_auc"] == pytest.approx(sum(r["test_auc"] for r in stored) / 2)
    assert f["mean_best_epoch"] == pytest.approx(sum(r["best_epoch"] for r in stored) / 2)
    assert s["horizon"] == 1 and s["slope_per_decade"] is None and "one model size only at H = 1" in s["sentence"]
    assert s["best_baseline"] in ("logistic_regression", "gradient_boosting", "volatility")
    assert s["best_baseline_test_auc_low"] <= s["best_baseline_test_auc"] <= s["best_baseline_test_auc_high"]
    assert any("intervals are wide" in n for n in s["notes"])

    # The report leads with the answer of its one dataset; the leaderboard shows the evaluated test AUC.
    index = write_report(engine, tmp_path / "report", entry.spec.dataset.name)
    page = index.read_text()
    assert "The answer on" in page and s["sentence"].split(":")[0] in page
    assert (tmp_path / "report" / "test_auc_vs_params.png").stat().st_size > 0
    assert (tmp_path / "report" / "evaluation_curves.png").stat().st_size > 0
    board = leaderboard(engine)
    assert board[0]["test_auc"] == pytest.approx(f["test_auc"]) and board[0]["test_auc_ci"].startswith(f"{f['test_auc']:.3f} [")
    # A second dataset: a report without --dataset is refused, never mixed.
    other = make_dataset(initialised_db, days=2500, seed=1, symbol="OTHER")
    create(initialised_db, dataset=other, preset="smoke", budgets=("100K",), horizons=(1,), trials=1)
    with pytest.raises(UserError, match="datasets"):
        write_report(engine, tmp_path / "mixed")
    with pytest.raises(UserError, match="one dataset"):
        write_report(engine, tmp_path / "mixed", "all")


def test_a_run_of_another_protocol_is_refused(engine: sa.Engine, initialised_db: str) -> None:
    searched(initialised_db, trials=1)
    entry = load_studies(engine)[0]
    evaluation = record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=1))
    item = payloads(evaluation)[0] | {"protocol_sha256": "0" * 64}
    with pytest.raises(EvaluationRefused, match="evaluated under protocol"):
        evaluate_run(engine, item)
    assert runs_done(engine, [entry.name]) == {entry.name: 0}
