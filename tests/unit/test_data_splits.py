"""Splits and samples: strict containment for every sample, and the two gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coordinator.data import registry
from coordinator.data.labels import threshold_label
from coordinator.data.samples import MIN_VAL_SAMPLES, make_samples
from coordinator.data.series import content_sha256, read_bars
from coordinator.data.splits import Splits, default_splits
from coordinator.data.synth import synthetic_series
from coordinator.errors import UserError
from tests.conftest import SPY_CSV, requires_real_data


@pytest.fixture(scope="module")
def dataset() -> registry.Dataset:
    """The spy-a25 dataset, built without a database (the registry tests cover storage)."""
    frame, meta = registry.compute_dataset_frame(read_bars(SPY_CSV).frame, "a25", None)
    return registry.Dataset("spy-a25", 1, content_sha256(frame), frame, list(frame.columns), meta)


@requires_real_data
def test_default_splits_follow_the_data(dataset: registry.Dataset) -> None:
    dates = dataset.frame.index
    splits = default_splits(dates)
    assert splits.train[0] == "1993-11-11" and splits.test[1] == "2021-08-19"  # the data's own range
    counts = {name: int(((dates >= start) & (dates <= end)).sum()) for name, (start, end) in splits.ranges().items()}
    assert sum(counts.values()) == len(dates)  # contiguous, no day lost or shared
    assert counts["test"] == round(0.10 * len(dates)) and counts["val"] == round(0.15 * len(dates))
    assert Splits.from_dict(splits.to_dict()) == splits


def test_overlapping_splits_are_refused() -> None:
    with pytest.raises(UserError, match="splits overlap: val ends 2020-01-10, test starts 2020-01-10"):
        Splits(train=("2019-01-01", "2019-12-31"), val=("2020-01-01", "2020-01-10"), test=("2020-01-10", "2020-12-31"))
    with pytest.raises(UserError, match="split val: bad date '2020-13-01', expected YYYY-MM-DD"):
        Splits(train=("2019-01-01", "2019-12-31"), val=("2020-13-01", "2020-01-10"), test=("2020-02-10", "2020-12-31"))


@requires_real_data
@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_every_sample_is_contained_in_its_split(dataset: registry.Dataset, horizon: int) -> None:
    splits = default_splits(dataset.frame.index)
    context = 60
    samples = make_samples(dataset, horizon, splits, context=context)
    dates = samples.dates
    assert samples.features.dtype == np.float32 and samples.labels.dtype == np.float32
    assert samples.features.shape == (len(dataset.frame), 25)
    expected = threshold_label(dataset.frame["close"].to_numpy(), dataset.frame["high"].to_numpy(), horizon)
    np.testing.assert_array_equal(samples.labels, expected.astype(np.float32))  # the horizon reaches the labels
    seen: set[int] = set()
    for name, (start, end) in splits.ranges().items():
        t = samples.index[name]
        assert t.dtype == np.int64 and len(t) > 0
        assert (dates[t - context + 1] >= np.datetime64(start)).all()  # window starts inside
        assert (dates[t + horizon] <= np.datetime64(end)).all()  # horizon ends inside
        assert not np.isnan(samples.labels[t]).any()
        in_split = np.flatnonzero((dates >= np.datetime64(start)) & (dates <= np.datetime64(end)))
        # Exactly the positions that fit: nothing lost beyond what containment requires.
        np.testing.assert_array_equal(t, in_split[context - 1 : len(in_split) - horizon])
        assert not seen & set(t.tolist())
        seen |= set(t.tolist())


@requires_real_data
def test_gate_too_few_validation_samples(dataset: registry.Dataset) -> None:
    dates = dataset.frame.index
    iso = [d.strftime("%Y-%m-%d") for d in dates]
    n = len(dates)
    # 260 validation days hold 260 - 59 - 5 = 196 samples at context 60, horizon 5.
    splits = Splits(train=(iso[0], iso[n - 1001]), val=(iso[n - 1000], iso[n - 741]), test=(iso[n - 740], iso[-1]))
    with pytest.raises(UserError, match=f"validation split has 196 samples at horizon 5, fewer than {MIN_VAL_SAMPLES}"):
        make_samples(dataset, 5, splits)
    make_samples(dataset, 1, splits)  # 200 samples at horizon 1: allowed


@requires_real_data
def test_gate_one_class_split_names_it(dataset: registry.Dataset) -> None:
    frame = dataset.frame.copy()
    splits = default_splits(frame.index)
    flat = frame.index >= pd.Timestamp(splits.test[0])
    frame.loc[flat, ["open", "high", "low", "close"]] = 100.0  # a market that never moves in the test period
    flat_dataset = registry.Dataset("flat", 1, content_sha256(frame), frame, dataset.input_columns, {})
    with pytest.raises(UserError, match="test split is one-class at horizon 3: all .* labels are negative"):
        make_samples(flat_dataset, 3, splits)
    with pytest.raises(UserError, match="train split is one-class at horizon 1: all .* labels are negative"):
        make_samples(dataset, 1, splits, threshold=0.5)


def test_synthetic_market_passes_the_gates() -> None:
    """Other tests train on the synthetic market: 2,500 days must give usable default splits."""
    frame, meta = registry.compute_dataset_frame(synthetic_series(2500, seed=0).frame, "a25", None)
    synthetic = registry.Dataset("syn-a25", 1, content_sha256(frame), frame, list(frame.columns), meta)
    for horizon in (1, 3, 5):
        samples = make_samples(synthetic, horizon, default_splits(frame.index))
        assert len(samples.index["val"]) >= MIN_VAL_SAMPLES
        assert 0 < samples.positive_rate("train") < 1
