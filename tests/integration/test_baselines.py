"""Baselines: same labels, splits and metrics as the trials; scaled on train only; stored in PostgreSQL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.data import registry
from coordinator.data.registry import Dataset, dataset_from_file
from coordinator.data.samples import Samples, make_samples
from coordinator.data.series import read_bars
from coordinator.data.splits import default_splits
from coordinator.errors import UserError
from coordinator.evaluation.baselines import (
    MODELS,
    VOLATILITY_INPUTS,
    best_baseline,
    compute_baselines,
    has_baselines,
    last_day_features,
    stationary_features,
    store_baselines,
)
from coordinator.store.tables import baselines
from tests.conftest import SPY_CSV, requires_real_data

TRIAL_METRIC_KEYS = {
    "val_auc", "val_pr_auc", "val_loss", "val_brier", "val_accuracy", "val_precision", "val_recall",
    "pred_mean", "pred_std", "pred_min", "pred_max", "val_positive_rate",
}  # fmt: skip


@pytest.fixture(scope="module")
def spy() -> Dataset:
    return dataset_from_file(SPY_CSV)


@pytest.fixture(scope="module")
def spy_results(spy: Dataset) -> dict[int, tuple[Samples, list[dict]]]:
    splits = default_splits(spy.frame.index)
    out = {}
    for horizon in (1, 3, 5):
        samples = make_samples(spy, horizon, splits)
        out[horizon] = (samples, compute_baselines(samples))
    return out


@requires_real_data
@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_real_spy_baselines_use_the_trials_samples_and_metrics(spy_results: dict, horizon: int) -> None:
    samples, results = spy_results[horizon]
    assert [r["model"] for r in results] == list(MODELS)
    for r in results:
        # The same split sizes the transformer trains and validates on.
        assert (r["n_train"], r["n_val"], r["n_test"]) == tuple(len(samples.index[s]) for s in ("train", "val", "test"))
        assert TRIAL_METRIC_KEYS <= set(r)
        assert r["val_positive_rate"] == pytest.approx(samples.positive_rate("val"))
        assert r["test_positive_rate"] == pytest.approx(samples.positive_rate("test"))
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
        assert 0.3 < r["val_auc"] < 0.9 and 0.3 < r["test_auc"] < 0.9
        assert r["test_positions"] == samples.index["test"].tolist() and len(r["test_predictions"]) == r["n_test"]
        if r["model"] == "base_rate":  # the AUC 0.5 reference: one constant, the train positive rate
            assert r["val_auc"] == 0.5 and r["test_auc"] == 0.5 and r["pred_std"] < 1e-12
            assert r["pred_mean"] == pytest.approx(samples.positive_rate("train"))
        else:
            assert r["pred_std"] > 1e-3, "a baseline that predicts a constant is no bar"


@requires_real_data
@pytest.mark.parametrize("horizon", [1, 5])
def test_volatility_baseline_on_real_spy(spy_results: dict, horizon: int) -> None:
    """ATR14 / Close and realised volatility alone predict whether the price moves 1% within H days."""
    samples, results = spy_results[horizon]
    vol = next(r for r in results if r["model"] == "volatility")
    assert vol["inputs"] == list(VOLATILITY_INPUTS)
    # Out of sample on both later splits: clearly above the 0.5 reference.
    assert vol["val_auc"] > 0.6 and vol["test_auc"] > 0.6, (vol["val_auc"], vol["test_auc"])
    # Higher volatility, more likely to move 1%: the fitted sign must say so.
    data = last_day_features(samples, VOLATILITY_INPUTS)
    x, _ = data["test"]
    probs = np.array(vol["test_predictions"])
    assert np.corrcoef(x[:, 0], probs)[0, 1] > 0.5
    best = best_baseline(results)
    assert best is not None and best["model"] != "base_rate"
    assert best["val_auc"] == max(r["val_auc"] for r in results)


@requires_real_data
def test_stationary_inputs_stay_in_the_training_range_on_test(spy: Dataset, spy_results: dict) -> None:
    """Raw price levels sit many train standard deviations away on test; the stationary inputs do not."""
    samples, _ = spy_results[1]
    raw_train = samples.features[samples.index["train"]].astype(np.float64)
    raw_test = samples.features[samples.index["test"]].astype(np.float64)
    close = samples.input_columns.index("close")
    raw_z = (raw_test[:, close].mean() - raw_train[:, close].mean()) / raw_train[:, close].std()
    assert raw_z > 3, "the premise: SPY's test-era price level is far outside its training range"
    data = last_day_features(samples)
    worst = np.abs(data["test"][0].mean(axis=0)).max()  # standardised with train statistics
    assert worst < 2.5, f"a stationary input drifted {worst:.1f} train standard deviations on test"
    values, names = stationary_features(samples)
    assert "close" not in names and "return_1" in names and "atr_14_to_close" in names


@requires_real_data
def test_positive_rates_rise_with_horizon(spy_results: dict) -> None:
    rates = [spy_results[h][1][0]["val_positive_rate"] for h in (1, 3, 5)]
    assert rates == sorted(rates) and rates[0] < rates[-1]


@requires_real_data
def test_features_are_the_last_day_scaled_on_train_only(spy_results: dict) -> None:
    samples, _ = spy_results[1]
    data = last_day_features(samples)
    values, _ = stationary_features(samples)
    raw_train = values[samples.index["train"]]
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    np.testing.assert_allclose(data["train"][0], (raw_train - mean) / std)
    raw_val = values[samples.index["val"]]
    np.testing.assert_allclose(data["val"][0], (raw_val - mean) / std)  # train statistics, not val's
    np.testing.assert_array_equal(data["val"][1], samples.labels[samples.index["val"]])


def test_a_planted_signal_is_found() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    signal = rng.standard_normal(n)
    features = np.column_stack([close, signal, rng.standard_normal(n)]).astype(np.float32)
    labels = (signal + 0.3 * rng.standard_normal(n) > 0).astype(np.float32)
    index = {"train": np.arange(30, 2000), "val": np.arange(2030, 2500), "test": np.arange(2530, n)}
    samples = Samples(features, labels, index, 30, 1, ["close", "rsi_14", "bb_pctb"], np.arange(n).astype("datetime64[D]"))
    for r in compute_baselines(samples):
        if r["model"] in ("logistic_regression", "gradient_boosting"):
            assert r["val_auc"] > 0.9 and r["test_auc"] > 0.9, r["model"]
        else:  # volatility inputs and the base rate do not see the planted signal
            assert r["val_auc"] < 0.6, r["model"]


@requires_real_data
def test_store_is_keyed_and_idempotent(engine: sa.Engine, spy: Dataset, spy_results: dict) -> None:
    assert not has_baselines(engine, spy, 1)
    store_baselines(engine, spy, 1, spy_results[1][1])
    store_baselines(engine, spy, 1, spy_results[1][1])  # again: replaced, not duplicated
    store_baselines(engine, spy, 5, spy_results[5][1])
    assert has_baselines(engine, spy, 1) and has_baselines(engine, spy, 5) and not has_baselines(engine, spy, 3)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(baselines).order_by(baselines.c.horizon, baselines.c.model)).mappings().all()
    assert [(r["horizon"], r["model"]) for r in rows] == [(h, m) for h in (1, 5) for m in sorted(MODELS)]
    stored = {(r["horizon"], r["model"]): r for r in rows}
    for r in spy_results[5][1]:
        row = stored[(5, r["model"])]
        assert row["val_auc"] == r["val_auc"] and row["test_auc"] == r["test_auc"] and row["n_val"] == r["n_val"]
        assert row["metrics"]["val_brier"] == r["val_brier"]
        assert (row["dataset_name"], row["dataset_version"], row["dataset_sha256"]) == ("spy-a25", 0, spy.sha256)


@requires_real_data
def test_baselines_command(engine: sa.Engine, initialised_db: str) -> None:
    registry.register_series(engine, "SPY", read_bars(SPY_CSV), source=str(SPY_CSV))
    built, _ = registry.build_dataset(engine, "SPY")
    runner = CliRunner()
    bad = runner.invoke(app, ["--database-url", initialised_db, "baselines", "--horizons", "1,x"])
    assert bad.exit_code != 0 and isinstance(bad.exception, UserError)
    unknown = runner.invoke(app, ["--database-url", initialised_db, "baselines", "--dataset", "nope-a25"])
    assert isinstance(unknown.exception, UserError) and "unknown dataset" in str(unknown.exception)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(baselines)).scalar_one() == 0

    result = runner.invoke(app, ["--database-url", initialised_db, "baselines", "--horizons", "1,5"])
    assert result.exit_code == 0, result.output
    assert f"{built.name}:{built.version}" in result.output
    with engine.connect() as conn:
        rows = conn.execute(sa.select(baselines.c.horizon, baselines.c.model, baselines.c.val_auc)).all()
    assert sorted((h, m) for h, m, _ in rows) == [(h, m) for h in (1, 5) for m in sorted(MODELS)]
    for _h, _m, auc in rows:  # the printed table shows what was stored
        assert f"{auc:.4f}" in result.output
