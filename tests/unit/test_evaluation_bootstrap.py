"""Block bootstrap: weighted metrics equal scikit-learn on the expanded resample; block intervals are
wider than i.i.d. ones on autocorrelated labels; seeds and days are resampled together."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from coordinator.evaluation.bootstrap import (
    day_counts,
    metric_replicates,
    percentile_interval,
    seed_draws,
    slope_per_decade,
    weighted_auc,
    weighted_average_precision,
)


def test_weighted_metrics_equal_sklearn_on_the_expanded_resample() -> None:
    rng = np.random.default_rng(1)
    n = 300
    labels = (rng.random(n) < 0.4).astype(float)
    scores = np.round(labels * 0.3 + rng.random(n), 2)  # rounding makes ties
    counts = day_counts(n, 7, 20, rng)
    aucs, aps = weighted_auc(labels, scores, counts), weighted_average_precision(labels, scores, counts)
    for r in range(20):
        idx = np.repeat(np.arange(n), counts[r])
        assert aucs[r] == pytest.approx(roc_auc_score(labels[idx], scores[idx]), abs=1e-12)
        assert aps[r] == pytest.approx(average_precision_score(labels[idx], scores[idx]), abs=1e-12)
    # Unit weights: the plain metrics. A constant score (the base rate) has AUC exactly 0.5.
    ones = np.ones((1, n))
    assert weighted_auc(labels, scores, ones)[0] == pytest.approx(roc_auc_score(labels, scores))
    assert weighted_auc(labels, np.full(n, 0.3), ones)[0] == 0.5
    assert weighted_average_precision(labels, np.full(n, 0.3), ones)[0] == pytest.approx(labels.mean())


@pytest.mark.parametrize("method", ["moving-block", "stationary"])
def test_resamples_keep_the_length_and_runs_of_consecutive_days(method: str) -> None:
    counts = day_counts(500, 20, 200, np.random.default_rng(0), method=method)
    assert counts.shape == (200, 500) and (counts.sum(axis=1) == 500).all()
    assert counts.min() >= 0
    if method == "moving-block":  # every block is 20 consecutive days (circular)
        iid = day_counts(500, 1, 200, np.random.default_rng(0))
        # Days come in runs: far fewer distinct "start of a present run" positions than i.i.d.
        runs = lambda c: ((c > 0) & (np.roll(c, 1, axis=1) == 0)).sum(axis=1).mean()  # noqa: E731
        assert runs(counts) < 0.5 * runs(iid)


def overlapping_window_series(n: int, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels from overlapping future windows (like the threshold label at H > 1) and a score that
    sees part of the same window: both autocorrelated over about H days."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n + horizon)
    future = np.convolve(shocks, np.ones(horizon), mode="valid")[1 : n + 1]  # sum of the next H shocks
    labels = (future > 0).astype(float)
    scores = future + 2.0 * rng.standard_normal(n)
    return labels, scores


def test_block_intervals_are_wider_than_iid_on_overlapping_windows() -> None:
    # The truth: the spread of the AUC over many independent series of the same process.
    true_aucs = [roc_auc_score(*overlapping_window_series(800, horizon=10, seed=1000 + s)) for s in range(300)]
    true_width = 2 * 1.96 * np.std(true_aucs)
    widths: dict[int, list[float]] = {1: [], 20: []}
    for seed in range(5):
        labels, scores = overlapping_window_series(800, horizon=10, seed=seed)
        for block in widths:  # block length 1 is the i.i.d. bootstrap
            counts = day_counts(len(labels), block, 1000, np.random.default_rng(seed))
            low, high = percentile_interval(weighted_auc(labels, scores, counts))
            widths[block].append(high - low)
    block, iid = np.array(widths[20]), np.array(widths[1])
    # Every block interval is clearly wider than the i.i.d. one on the same series ...
    assert (block / iid).min() > 1.2, block / iid
    # ... and closer to the true width, which the i.i.d. interval understates.
    assert iid.mean() < 0.85 * true_width
    assert abs(block.mean() - true_width) < abs(iid.mean() - true_width)


def test_block_and_iid_intervals_agree_on_independent_days() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(800) < 0.5).astype(float)
    scores = labels + 2.0 * rng.standard_normal(800)
    widths = {}
    for block in (1, 20):
        counts = day_counts(800, block, 1000, np.random.default_rng(4))
        low, high = percentile_interval(weighted_auc(labels, scores, counts))
        widths[block] = high - low
    assert 0.75 < widths[20] / widths[1] < 1.33, widths


def test_seed_resampling_adds_the_seed_variance() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(600) < 0.5).astype(float)
    base = labels + 2.0 * rng.standard_normal(600)
    # Five "seeds" whose quality differs a lot: the interval must widen when seeds are resampled.
    predictions = [base * w + rng.standard_normal(600) * (1 - w) * 3 for w in (0.2, 0.4, 0.6, 0.8, 1.0)]
    counts = day_counts(600, 20, 1000, np.random.default_rng(6))
    days_only = metric_replicates("auc", labels, predictions, counts)
    both = metric_replicates("auc", labels, predictions, counts, seed_draws(5, 1000, np.random.default_rng(7)))
    w_days = np.subtract(*percentile_interval(days_only)[::-1])
    w_both = np.subtract(*percentile_interval(both)[::-1])
    assert w_both > 1.2 * w_days
    # Both are centred on the mean over seeds of the plain AUCs.
    point = np.mean([roc_auc_score(labels, p) for p in predictions])
    assert abs(np.median(both) - point) < 0.02


def test_slope_per_decade() -> None:
    assert slope_per_decade([1e5, 1e6, 1e7], np.array([0.5, 0.52, 0.54])) == pytest.approx(0.02)
    many = slope_per_decade([1e5, 1e7], np.array([[0.5, 0.5], [0.5, 0.6]]))
    np.testing.assert_allclose(many, [0.0, 0.05])
