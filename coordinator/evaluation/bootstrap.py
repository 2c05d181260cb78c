"""Block bootstrap over test days: intervals that respect autocorrelated labels.

For a horizon H > 1 the label windows of consecutive days overlap (day t and day t+1 share H-1
future days), and volatility clusters for weeks, so test samples are not independent. Resampling
single days (the i.i.d. bootstrap) then understates the spread of a metric. Here whole blocks of
consecutive test days are resampled instead:

- moving-block (default): the resample is made of blocks of exactly `block_length` consecutive days
  starting at uniformly drawn days, wrapping around the end (circular), cut to the original length;
- stationary (Politis & Romano): block lengths are geometric with mean `block_length`.

A resample is represented by how often each test day appears in it (a count vector), so AUC and
PR-AUC of the resampled data are weighted metrics of the original arrays: no copies, and all
replicates of one prediction vector are computed together.

Seeds and days are resampled together in each replicate (`mean_metric_replicates`): draw days by
blocks, draw S seeds with replacement from the S trained seeds, and average the metric over the
drawn seeds. The spread of those replicate means contains both the seed-to-seed variance of the
training and the sampling variance of the test days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("moving-block", "stationary")


def day_counts(n: int, block_length: int, replicates: int, rng: np.random.Generator, method: str = "moving-block") -> np.ndarray:
    """(replicates, n) int array: how often each of n consecutive days appears in each resample."""
    if n < 1 or block_length < 1 or replicates < 1:
        raise ValueError(f"need n, block_length, replicates >= 1 (got {n}, {block_length}, {replicates})")
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; choose one of {METHODS}")
    block_length = min(block_length, n)
    if method == "moving-block":
        n_blocks = -(-n // block_length)
        starts = rng.integers(0, n, size=(replicates, n_blocks))
        days = (starts[:, :, None] + np.arange(block_length)[None, None, :]).reshape(replicates, -1)[:, :n] % n
    else:
        # Each next day continues the current block with probability 1 - 1/L, else jumps anywhere.
        jumps = rng.random((replicates, n)) < 1.0 / block_length
        jumps[:, 0] = True
        fresh = rng.integers(0, n, size=(replicates, n))
        days = np.empty((replicates, n), dtype=np.int64)
        for i in range(n):
            if i == 0:
                days[:, 0] = fresh[:, 0]
            else:
                days[:, i] = np.where(jumps[:, i], fresh[:, i], (days[:, i - 1] + 1) % n)
    counts = np.zeros((replicates, n), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(replicates), days.shape[1]), days.ravel()), 1)
    return counts


def _tie_groups(scores: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Order of the scores and the start of each run of equal scores in that order."""
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of (labels, scores) with each sample counted `weights` times; weights (R, n) -> (R,).

    Ties count one half, as in scikit-learn's roc_auc_score. NaN for a replicate with one class.
    """
    y = np.asarray(labels, dtype=np.float64)
    order, starts = _tie_groups(np.asarray(scores, dtype=np.float64), descending=False)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y[order]), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's PR-AUC: sum of recall steps x precision) with weights; (R,)."""
    y = np.asarray(labels, dtype=np.float64)
    order, starts = _tie_groups(np.asarray(scores, dtype=np.float64), descending=True)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))[:, order]
    tp = np.cumsum(np.add.reduceat(w * y[order], starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w * (1.0 - y[order]), starts, axis=1), axis=1)
    n_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / n_pos
        precision = tp / (tp + fp)
        steps = np.diff(np.concatenate([np.zeros_like(recall[:, :1]), recall], axis=1), axis=1)
        return np.nansum(steps * precision, axis=1) / np.where(n_pos[:, 0] > 0, 1.0, np.nan)


METRICS = {"auc": weighted_auc, "pr_auc": weighted_average_precision}


def metric_replicates(metric: str, labels: np.ndarray, predictions: Sequence[np.ndarray], counts: np.ndarray,
                      seed_draws: np.ndarray | None = None) -> np.ndarray:
    """(R,) replicate values of the mean over seeds of `metric`.

    predictions: one probability vector per seed (each aligned with labels). counts: (R, n) day
    counts. seed_draws: (R, S') indices of the seeds drawn in each replicate; None keeps every seed
    in every replicate (sampling variance only, e.g. for a deterministic baseline with one vector).
    """
    fn = METRICS[metric]
    per_seed = np.stack([fn(labels, p, counts) for p in predictions], axis=1)  # (R, S)
    if seed_draws is None:
        return per_seed.mean(axis=1)
    return np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)


def seed_draws(n_seeds: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(R, S) seeds drawn with replacement per replicate (the seed part of the combined bootstrap)."""
    return rng.integers(0, n_seeds, size=(replicates, n_seeds))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of the finite replicate values."""
    values = replicates[np.isfinite(replicates)]
    if len(values) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def slope_per_decade(n_params: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Least-squares slope of values against log10(n_params); values (..., B) -> (...)."""
    x = np.log10(np.asarray(n_params, dtype=np.float64))
    x = x - x.mean()
    v = np.asarray(values, dtype=np.float64)
    return (v * x).sum(axis=-1) / (x * x).sum() if (x * x).sum() > 0 else np.full(v.shape[:-1], np.nan)
