"""The bar a transformer must beat: logistic regression and gradient boosting on the same samples.

Same labels, same splits, same metrics as the trials (coordinator.metrics): each sample's inputs are
the features of the last day of its window (samples.features[t]), standardised with statistics of
the train split only. Both models have fixed hyperparameters and are fitted on train only: nothing
is tuned or early-stopped on validation or test, so the validation metrics (the ones trials report)
and the test metrics are both out-of-sample.

Stored per (dataset name, dataset version, horizon, model) in the `baselines` table, by
`coordinator baselines` and by `coordinator create-studies` for every new study's dataset and horizon.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Optional

import numpy as np
import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import JSONB, insert

from coordinator.app import OutputFormat
from coordinator.errors import UserError
from coordinator.metrics import binary_metrics
from coordinator.schema import metadata

if TYPE_CHECKING:
    from coordinator.data.registry import Dataset
    from coordinator.data.samples import Samples

baselines = sa.Table(
    "baselines",
    metadata,
    sa.Column("dataset_name", sa.Text, primary_key=True),
    sa.Column("dataset_version", sa.Integer, primary_key=True),
    sa.Column("horizon", sa.Integer, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),  # logistic_regression | gradient_boosting
    sa.Column("dataset_sha256", sa.Text, nullable=False),
    sa.Column("n_train", sa.Integer, nullable=False),
    sa.Column("n_val", sa.Integer, nullable=False),
    sa.Column("n_test", sa.Integer, nullable=False),
    sa.Column("val_auc", sa.Float, nullable=False),
    sa.Column("val_pr_auc", sa.Float, nullable=False),
    sa.Column("val_loss", sa.Float, nullable=False),
    sa.Column("val_brier", sa.Float, nullable=False),
    sa.Column("val_accuracy", sa.Float, nullable=False),
    sa.Column("val_precision", sa.Float, nullable=False),
    sa.Column("val_recall", sa.Float, nullable=False),
    sa.Column("val_positive_rate", sa.Float, nullable=False),
    sa.Column("pred_mean", sa.Float, nullable=False),
    sa.Column("pred_std", sa.Float, nullable=False),
    sa.Column("pred_min", sa.Float, nullable=False),
    sa.Column("pred_max", sa.Float, nullable=False),
    sa.Column("test_auc", sa.Float, nullable=False),
    sa.Column("test_loss", sa.Float, nullable=False),
    sa.Column("metrics", JSONB, nullable=False),  # every metric (test_* too), hyperparameters, context
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

MODELS = ("logistic_regression", "gradient_boosting")


def make_model(name: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic_regression":
        return LogisticRegression(C=1.0, max_iter=5000)
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


def last_day_features(samples: Samples) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (X, y): the last day of each window, standardised with train statistics."""
    raw = {name: samples.features[pos].astype(np.float64) for name, pos in samples.index.items()}
    mean, std = raw["train"].mean(axis=0), raw["train"].std(axis=0)
    std[std == 0] = 1.0
    return {name: ((x - mean) / std, samples.labels[samples.index[name]].astype(np.float64)) for name, x in raw.items()}


def compute_baselines(samples: Samples) -> list[dict[str, Any]]:
    """One dict per model: n_* sizes, val_* and pred_* (as trials), test_* and test_pred_*."""
    from threadpoolctl import threadpool_limits

    data = last_day_features(samples)
    x_train, y_train = data["train"]
    results = []
    for name in MODELS:
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
            result.update(binary_metrics(y, model.predict_proba(x)[:, 1], prefix=prefix, pred_prefix=pred_prefix))
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


def baselines_command(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; required when several datasets are registered.")] = None,
    horizons: Annotated[str, typer.Option("--horizons", help="comma-separated horizons in trading days")] = "1,3,5",
    format: Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")] = OutputFormat.table,
) -> None:
    """Fit logistic regression and gradient boosting per horizon on the default splits; store and print them."""
    import json

    from coordinator.app import engine_for, progress_bar
    from coordinator.data.registry import load_dataset
    from coordinator.data.samples import make_samples
    from coordinator.data.splits import default_splits
    from coordinator.datasets import resolve_dataset
    from coordinator.studies import CONTEXT, MAX_HORIZON, THRESHOLD, parse_horizons

    wanted = parse_horizons(horizons) or ()
    bad = [h for h in wanted if not 1 <= h <= MAX_HORIZON]
    if bad:
        raise UserError(f"bad --horizons '{horizons}': horizons must be between 1 and {MAX_HORIZON} trading days")
    with engine_for(ctx) as engine:
        ref = resolve_dataset(engine, dataset)
        data = load_dataset(engine, ref.name, ref.version)
        splits = default_splits(data.frame.index)
        # Every gate runs before anything is written: bad input changes nothing.
        samples = {h: make_samples(data, h, splits, context=CONTEXT, threshold=THRESHOLD) for h in unique_ints(wanted)}
        rows = []
        with progress_bar() as bar:
            task = bar.add_task(f"baselines on {ref}", total=len(samples))
            for h, these in samples.items():
                results = compute_baselines(these)
                store_baselines(engine, data, h, results)
                rows += [{"dataset": str(ref), "horizon": h, **{k: r[k] for k in BASELINE_COLUMNS}} for r in results]
                bar.advance(task)
    if format == OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if format == OutputFormat.csv:
        typer.echo(",".join(["dataset", "horizon", *BASELINE_COLUMNS]))
        for r in rows:
            typer.echo(",".join(str(r[k]) for k in ["dataset", "horizon", *BASELINE_COLUMNS]))
        return
    split_text = ", ".join(f"{name} {start}..{end}" for name, (start, end) in splits.to_dict().items())
    typer.echo(f"dataset {ref}  splits: {split_text}")
    typer.echo(f"{'H':>2} {'model':<20} {'n_train':>7} {'n_val':>5} {'n_test':>6} {'val_auc':>7} {'val_pr_auc':>10} {'val_loss':>8} {'test_auc':>8}")
    for r in rows:
        typer.echo(
            f"{r['horizon']:>2} {r['model']:<20} {r['n_train']:>7} {r['n_val']:>5} {r['n_test']:>6} "
            f"{r['val_auc']:>7.4f} {r['val_pr_auc']:>10.4f} {r['val_loss']:>8.4f} {r['test_auc']:>8.4f}"
        )


BASELINE_COLUMNS = ("model", "n_train", "n_val", "n_test", "val_auc", "val_pr_auc", "val_loss", "test_auc")


def unique_ints(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))
