"""The bar a transformer must beat, on the same samples, labels, splits and metrics as the trials.

Inputs are stationary transforms of the last day of each window (`stationary_features`): returns
and ratios to Close instead of raw price levels, which on the test years sit many standard
deviations outside the training range. They are standardised with train statistics only.

- logistic_regression and gradient_boosting: every stationary input;
- volatility: logistic regression on two volatility measures only (ATR14 / Close and the 20-day
  realised volatility of daily log returns): the label mostly measures whether the price moves
  1% within H days, which a volatility level largely predicts;
- base_rate: the train split's positive rate for every sample (AUC 0.5, PR-AUC = positive rate).

Every model has fixed hyperparameters and is fitted on train only: nothing is tuned or early-stopped
on validation or test, so the validation metrics (the ones trials report) and the test metrics are
both out-of-sample. The best baseline of a horizon is chosen by validation AUC (`best_baseline`).
The test predictions are kept (metrics JSON: test_positions, test_predictions) so the final
evaluation bootstraps baselines and transformers on the same resampled test days.

Stored per (dataset name, dataset version, horizon, model) in the `baselines` table, by
`coordinator baselines` and by `coordinator create-studies` for every new study's dataset and horizon.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from threadpoolctl import threadpool_limits

from coordinator.data.registry import Dataset, load_dataset
from coordinator.data.samples import Samples
from coordinator.store.tables import baselines
from coordinator.studies.metrics import binary_metrics
from coordinator.studies.samples import study_samples
from coordinator.studies.spec import StudySpec


MODELS = ("logistic_regression", "gradient_boosting", "volatility", "base_rate")
VOLATILITY_INPUTS = ("atr_14_to_close", "realised_vol_20")


class BaseRate:
    """Predicts the train split's positive rate for every sample: the AUC 0.5 reference."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> BaseRate:
        self.rate = float(np.mean(y))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.full(len(x), self.rate)
        return np.column_stack([1.0 - p, p])

    def get_params(self) -> dict[str, Any]:
        return {"rate": self.rate} if hasattr(self, "rate") else {}


def make_model(name: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if name in ("logistic_regression", "volatility"):
        return LogisticRegression(C=1.0, max_iter=5000)
    if name == "base_rate":
        return BaseRate()
    # Fixed, conservative settings: no early stopping, so no split but train is ever looked at.
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=0,
    )


PRICE_LEVELS = ("open", "high", "low", "vwap_20")  # and every dema_* / sma_*: divided by Close
VOLUME_SCALED = ("adosc",)  # divided by the 20-day mean volume
PASSED_THROUGH_PREFIXES = ("rsi_", "stochrsi_", "adx_", "bb_pctb", "vix_")  # bounded or mean-reverting already


def stationary_features(samples: Samples) -> tuple[np.ndarray, list[str]]:
    """(T, F') float64 inputs that do not drift with the price level, and their names.

    Every value on day t uses days <= t only (trailing windows); the first days are NaN and are
    never a sample (samples start `context` days in).
    """
    frame = pd.DataFrame(samples.features.astype(np.float64), columns=samples.input_columns)
    close = frame["close"]
    log_return = np.log(close).diff()
    mean_volume = frame["volume"].rolling(20).mean() if "volume" in frame else None
    out: dict[str, pd.Series] = {
        "return_1": close.pct_change(1),
        "return_5": close.pct_change(5),
        "return_20": close.pct_change(20),
        "realised_vol_20": log_return.rolling(20).std(),
    }
    for name in samples.input_columns:
        column = frame[name]
        if name == "close":
            continue  # its information is in the returns above
        if name in PRICE_LEVELS or name.startswith(("dema_", "sma_")):
            out[f"{name}_to_close"] = column / close - 1.0
        elif name in ("atr_14", "macd"):
            out[f"{name}_to_close"] = column / close
        elif name == "volume" and mean_volume is not None:
            out["volume_to_mean_20"] = np.log(column / mean_volume)
        elif name == "obv" and mean_volume is not None:
            out["obv_change_5_to_volume"] = column.diff(5) / mean_volume
        elif name in VOLUME_SCALED and mean_volume is not None:
            out[f"{name}_to_volume"] = column / mean_volume
        elif name.startswith(PASSED_THROUGH_PREFIXES):
            out[name] = column
        else:
            raise ValueError(f"no stationary transform for input column {name!r}: add one to stationary_features")
    table = pd.DataFrame(out)
    return table.to_numpy(dtype=np.float64), list(table.columns)


def last_day_features(samples: Samples, columns: tuple[str, ...] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (X, y): stationary inputs of the last day of each window, standardised with train
    statistics; `columns` restricts them (e.g. VOLATILITY_INPUTS)."""
    values, names = stationary_features(samples)
    if columns is not None:  # inputs a dataset lacks (e.g. no ATR column) are left out
        values = values[:, [names.index(c) for c in columns if c in names]]
    raw = {name: values[pos] for name, pos in samples.index.items()}
    for name, x in raw.items():
        if not np.all(np.isfinite(x)):
            raise ValueError(f"non-finite stationary inputs in the {name} split (a window starts too early?)")
    mean, std = raw["train"].mean(axis=0), raw["train"].std(axis=0)
    std[std == 0] = 1.0
    return {name: ((x - mean) / std, samples.labels[samples.index[name]].astype(np.float64)) for name, x in raw.items()}


def compute_baselines(samples: Samples) -> list[dict[str, Any]]:
    """One dict per model: n_* sizes, val_* and pred_* (as trials), test_* and test_pred_*."""
    inputs = {"all": last_day_features(samples), "volatility": last_day_features(samples, VOLATILITY_INPUTS)}
    results = []
    for name in MODELS:
        data = inputs["volatility" if name == "volatility" else "all"]
        x_train, y_train = data["train"]
        started = time.perf_counter()
        # A few thousand rows: one thread is fastest, and OpenMP threads spinning on shared cores
        # made gradient boosting ~20x slower when other processes were busy.
        with threadpool_limits(limits=1):
            model = make_model(name).fit(x_train, y_train.astype(np.int64))
        result: dict[str, Any] = {
            "model": name,
            "n_train": len(y_train),
            "n_val": len(data["val"][1]),
            "n_test": len(data["test"][1]),
            "context": samples.context,
            "horizon": samples.horizon,
            "hyperparameters": {k: v for k, v in model.get_params().items() if isinstance(v, (int, float, str, bool))},
        }
        for split, prefix, pred_prefix in (("val", "val_", ""), ("test", "test_", "test_")):
            x, y = data[split]
            probs = model.predict_proba(x)[:, 1]
            result.update(binary_metrics(y, probs, prefix=prefix, pred_prefix=pred_prefix))
            if split == "test":
                result["test_positions"] = samples.index["test"].tolist()
                result["test_predictions"] = probs.tolist()
        result["inputs"] = list(VOLATILITY_INPUTS) if name == "volatility" else "all stationary inputs"
        result["seconds"] = time.perf_counter() - started
        results.append(result)
    return results


def store_baselines(engine: sa.Engine, dataset: Dataset, horizon: int, results: list[dict[str, Any]]) -> None:
    """Insert or replace the rows of (dataset version, horizon), in one transaction."""
    columns = {c.name for c in baselines.columns} - {"dataset_name", "dataset_version", "horizon", "created_at"}
    rows = [
        {
            "dataset_name": dataset.name,
            "dataset_version": dataset.version,
            "horizon": horizon,
            "dataset_sha256": dataset.sha256,
            **{k: v for k, v in r.items() if k in columns},
            "metrics": r,
        }
        for r in results
    ]
    statement = insert(baselines)
    update = {c: statement.excluded[c] for c in columns | {"dataset_sha256"}}
    with engine.begin() as conn:
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["dataset_name", "dataset_version", "horizon", "model"],
                set_={**update, "created_at": sa.func.now()},
            ),
            rows,
        )


def fit_baselines(engine: sa.Engine, dataset: Dataset, horizon: int, samples: Samples) -> list[dict[str, Any]]:
    """Fit every baseline on `samples` and store them, replacing that dataset version and horizon's rows."""
    results = compute_baselines(samples)
    store_baselines(engine, dataset, horizon, results)
    return results


def ensure_baselines(engine: sa.Engine, spec: StudySpec) -> tuple[list[dict[str, Any]], bool]:
    """The baselines of the study's dataset version and horizon, fitted on the study's own test days.

    They are fitted and stored first when a model is missing or was fitted on other test days.
    Returns (rows with model, val_auc and metrics, whether they were fitted now)."""
    dataset = load_dataset(engine, spec.dataset.name, spec.dataset.version)
    samples = study_samples(spec, dataset)
    where = (baselines.c.dataset_name == dataset.name, baselines.c.dataset_version == dataset.version, baselines.c.horizon == spec.horizon)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(baselines.c.model, baselines.c.val_auc, baselines.c.metrics).where(*where)).mappings().all()
    test_days = samples.index["test"].tolist()
    usable = [dict(r) for r in rows if r["metrics"].get("test_positions") == test_days]
    if {r["model"] for r in usable} == set(MODELS):
        return usable, False
    results = fit_baselines(engine, dataset, spec.horizon, samples)
    return [{"model": r["model"], "val_auc": r["val_auc"], "metrics": r} for r in results], True


def best_baseline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The baseline with the highest validation AUC (never chosen on test); the base rate is the
    AUC 0.5 reference, not a contender. None without candidates."""
    candidates = [r for r in rows if r["model"] != "base_rate"]
    return max(candidates, key=lambda r: r["val_auc"]) if candidates else None


def has_baselines(engine: sa.Engine, dataset: Dataset, horizon: int) -> bool:
    """Whether every baseline model is stored for this dataset version and horizon."""
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count())
            .select_from(baselines)
            .where(
                baselines.c.dataset_name == dataset.name,
                baselines.c.dataset_version == dataset.version,
                baselines.c.horizon == horizon,
                baselines.c.model.in_(MODELS),
            )
        ).scalar_one()
    return stored == len(MODELS)


