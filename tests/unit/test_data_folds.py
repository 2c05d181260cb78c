"""Walk-forward folds: the purge invariants for every fold, each test day predicted exactly once,
and a fold's data reaching no run's training for that fold (only its score)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.data.registry import Dataset
from coordinator.data.samples import make_samples
from coordinator.data.splits import default_splits
from coordinator.data.synth import synthetic_series
from coordinator.errors import UserError
from coordinator.data.folds import Fold, cut_folds, day_index, fold_positions, fold_samples, pooled_positions


def synthetic_dataset(days: int = 3000, seed: int = 0) -> Dataset:
    from coordinator.data.registry import compute_dataset_frame

    frame, _ = compute_dataset_frame(synthetic_series(days, seed).frame, "a25", None)
    return Dataset(name="syn-a25", version=0, sha256="synthetic", frame=frame, input_columns=[str(c) for c in frame.columns])


DATASET = synthetic_dataset()
WALK_FORWARD_SPLITS = default_splits(DATASET.frame.index, val_frac=0.12, test_frac=0.40)


@pytest.mark.parametrize("n_folds", [1, 3, 5])
@pytest.mark.parametrize("horizon", [1, 5, 20])
@pytest.mark.parametrize("context", [1, 60])
def test_purge_invariants_hold_for_every_fold(n_folds: int, horizon: int, context: int) -> None:
    samples = make_samples(DATASET, horizon, WALK_FORWARD_SPLITS, context=context)
    folds = cut_folds(samples.dates, WALK_FORWARD_SPLITS, n_folds, horizon, context)
    assert [f.number for f in folds] == list(range(1, n_folds + 1))
    seen: list[np.ndarray] = []
    for fold in folds:
        p = fold_positions(samples.dates, samples.labels, fold, context, horizon)
        start = day_index(samples.dates, fold.test[0])
        train, stop, test = p["train"], p["val"], p["test"]
        assert len(train) and len(stop) and len(test)
        # No training or early-stopping label window reaches the fold: labels of t are days t+1..t+H.
        assert train.max() + horizon < start and stop.max() + horizon < start
        # Training labels end before the first early-stopping window starts (H + context - 1 purged days).
        assert train.max() + horizon < stop.min() - context + 1
        assert stop.min() - train.max() >= fold.purge_days + 1 and start - stop.max() >= fold.embargo_days + 1
        # Every test day lies in its fold, is labelled, and comes after everything the model learnt from.
        assert test.min() >= start and test.max() <= day_index(samples.dates, fold.test[1], side="right") - 1
        assert np.isfinite(samples.labels[test]).all()
        assert np.all(np.diff(test) == 1)
        seen.append(test)
    pooled = np.concatenate(seen)
    # Each test day predicted exactly once (disjoint folds), and together every labelled test day.
    assert len(np.unique(pooled)) == len(pooled)
    first = day_index(samples.dates, WALK_FORWARD_SPLITS.test[0])
    labelled = np.flatnonzero(np.isfinite(samples.labels))
    assert pooled.tolist() == [t for t in labelled.tolist() if t >= max(first, context - 1)]
    assert pooled.tolist() == pooled_positions(samples, folds).tolist()


def test_folds_are_consecutive_and_the_first_early_stops_on_the_search_validation_split() -> None:
    horizon, context = 5, 60
    samples = make_samples(DATASET, horizon, WALK_FORWARD_SPLITS, context=context)
    folds = cut_folds(samples.dates, WALK_FORWARD_SPLITS, 4, horizon, context)
    assert folds[0].early_stopping == WALK_FORWARD_SPLITS.val and folds[0].train == WALK_FORWARD_SPLITS.train
    first = fold_samples(samples, folds[0])
    np.testing.assert_array_equal(first.index["val"], samples.index["val"])
    np.testing.assert_array_equal(first.index["train"], samples.index["train"])
    for earlier, later in zip(folds, folds[1:], strict=False):
        assert day_index(samples.dates, later.test[0]) == day_index(samples.dates, earlier.test[1]) + 1
        # Expanding window: a later fold trains on more days, from the same first day.
        assert later.train[0] == earlier.train[0] and later.train[1] > earlier.train[1]
    lengths = [day_index(samples.dates, f.test[1]) - day_index(samples.dates, f.test[0]) + 1 for f in folds]
    assert max(lengths) - min(lengths) <= 1
    assert Fold.from_dict(folds[2].to_dict()) == folds[2]


def test_too_short_a_test_split_or_history_is_refused() -> None:
    samples = make_samples(DATASET, 1, WALK_FORWARD_SPLITS, context=60)
    with pytest.raises(UserError, match="too few for"):
        cut_folds(samples.dates, WALK_FORWARD_SPLITS, 600, 1, 60)
    with pytest.raises(UserError, match="no training days"):
        cut_folds(samples.dates, WALK_FORWARD_SPLITS, 3, 1, 60, early_stopping_days=1790)
    with pytest.raises(UserError, match="at least 1"):
        cut_folds(samples.dates, WALK_FORWARD_SPLITS, 0, 1, 60)


def with_rows_altered(dataset: Dataset, first: str, last: str) -> Dataset:
    """Every value of every day in [first, last] replaced: prices (so labels), volume, indicators."""
    frame = dataset.frame.copy()
    rows = (frame.index >= first) & (frame.index <= last)
    rng = np.random.default_rng(7)
    for column in frame.columns:
        frame.loc[rows, column] = frame.loc[rows, column].to_numpy() * rng.uniform(0.5, 1.5, rows.sum())
    frame.loc[rows, "high"] = frame.loc[rows, "close"].to_numpy() * rng.uniform(1.0, 1.05, rows.sum())
    return Dataset(dataset.name, dataset.version, dataset.sha256, frame, dataset.input_columns)


@pytest.mark.parametrize("fold_number", [1, 3])
def test_changing_every_row_of_a_fold_changes_no_training_input_of_that_fold(fold_number: int) -> None:
    horizon, context = 5, 60
    original = make_samples(DATASET, horizon, WALK_FORWARD_SPLITS, context=context)
    fold = cut_folds(original.dates, WALK_FORWARD_SPLITS, 3, horizon, context)[fold_number - 1]
    altered = make_samples(with_rows_altered(DATASET, *fold.test), horizon, WALK_FORWARD_SPLITS, context=context)
    a, b = fold_samples(original, fold), fold_samples(altered, fold)
    for split in ("train", "val"):
        positions = a.index[split]
        np.testing.assert_array_equal(positions, b.index[split])
        windows = positions[:, None] + np.arange(-context + 1, 1)[None, :]
        np.testing.assert_array_equal(a.features[windows], b.features[windows])
        np.testing.assert_array_equal(a.labels[positions], b.labels[positions])
    scored = a.index["test"]
    assert (a.labels[scored] != b.labels[scored]).mean() > 0.2  # the premise: the fold really differs


@pytest.mark.usefixtures("one_torch_thread")
def test_a_runs_training_for_a_fold_ignores_the_fold_and_only_its_score_changes() -> None:
    pytest.importorskip("torch")
    from coordinator.studies.search_space import Architecture, TrialConfig
    from worker.train import TrainOptions, train

    horizon, context = 1, 60
    original = make_samples(DATASET, horizon, WALK_FORWARD_SPLITS, context=context)
    fold = cut_folds(original.dates, WALK_FORWARD_SPLITS, 3, horizon, context)[1]
    altered = make_samples(with_rows_altered(DATASET, *fold.test), horizon, WALK_FORWARD_SPLITS, context=context)
    config = TrialConfig(architecture=Architecture(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_features=original.features.shape[1]),
                         learning_rate=2e-3, weight_decay=0.01, dropout=0.1, warmup_frac=0.1, max_epochs=2, patience=2,
                         batch_size=64, seed=3)
    runs = [train(config, fold_samples(s, fold), TrainOptions(score_test=True)) for s in (original, altered)]
    assert runs[0].metrics == runs[1].metrics and runs[0].best_epoch == runs[1].best_epoch
    assert [e.to_dict() | {"seconds": 0} for e in runs[0].epochs] == [e.to_dict() | {"seconds": 0} for e in runs[1].epochs]
    assert runs[0].test_predictions is not None and runs[1].test_predictions is not None
    assert not np.allclose(runs[0].test_predictions, runs[1].test_predictions)
