"""Model-comparison statistics on per-day losses: which model sizes beat the baseline, and what we could see.

Pure computation on arrays (no database). The evaluation compares every budget's answer with the
baselines on the same pooled test days; per-day losses make those comparisons paired, and the
tests below resample whole blocks of consecutive days because labels of nearby days overlap
(horizon H) and volatility clusters:

- `per_day_losses`: log loss and Brier score of every test day (mean over a configuration's seeds);
- `block_length`: the Politis-White automatic block length, never shorter than H;
- `spa_test`: Hansen's test of superior predictive ability, "does some budget beat the benchmark
  (the best baseline on validation)?", corrected for having tried several budgets;
- `model_confidence_set`: Hansen-Lunde-Nason's set of models not worse than the best, at 90%;
- `minimum_detectable_effect`, `detectable_from_replicates`: the smallest true effect the experiment
  had 80% power to detect at the 5% level, from a bootstrap standard error;
- `folds_and_seeds_needed`: how many test days (folds of today's length) or seeds a target width needs;
- `reliability_curve`, `brier_decomposition`: calibration.

The SPA, MCS and block-length estimator come from the arch package (public API: arch.bootstrap).
This module is the only place that imports arch, so a change of arch's behaviour is caught by the
tests of this module alone (tests/unit/test_evaluation_comparison.py pins the version range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from coordinator.evaluation.bootstrap import METHODS
from coordinator.studies.metrics import EPS

# arch is imported where it is used, as coordinator's metrics do with scikit-learn: importing it
# pulls in statsmodels (about 1.7 s), which every `coordinator` command would pay at start.

LOSSES = ("log_loss", "brier")

# Our bootstrap methods by arch's names: the moving-block bootstrap in bootstrap.py wraps around
# the end of the test days, which is arch's circular block bootstrap.
ARCH_BOOTSTRAP = {"moving-block": "circular", "stationary": "stationary"}


# --- per-day losses --------------------------------------------------------------------------


def per_day_losses(labels: ArrayLike, probs: ArrayLike) -> dict[str, np.ndarray]:
    """{"log_loss": (n,), "brier": (n,)}: the loss of every test day, for paired comparisons.

    probs is one probability vector (n,) or one per seed (S, n); with seeds, a day's loss is the
    mean over seeds of each seed's loss on that day (the same mean-over-seeds the verdict's
    metrics use, not the loss of an averaged ensemble). Probabilities are clipped to
    [EPS, 1-EPS] for the log loss as in coordinator's metrics, so the mean of these per-day log
    losses equals its log_loss; the Brier score uses the raw probabilities, as there.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if y.ndim != 1 or p.ndim != 2 or p.shape[1] != y.shape[0]:
        raise ValueError(f"labels (n,) and probabilities (n,) or (S, n) must align; got {y.shape} and {np.shape(probs)}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or Inf")
    clipped = np.clip(p, EPS, 1 - EPS)
    log_loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    brier = (p - y) ** 2
    return {"log_loss": log_loss.mean(axis=0), "brier": brier.mean(axis=0)}


# --- block length ----------------------------------------------------------------------------


def block_length(series: ArrayLike, horizon: int, method: str = "moving-block") -> int:
    """The bootstrap block length for these days: Politis-White, at least H, at most n/2.

    series: one per-day series (n,), or several as columns (n, k), e.g. every model's per-day
    loss difference to the benchmark; with several, the longest estimate wins (a block long enough
    for the most persistent series is long enough for the others). The estimate is the one for
    `method` (arch's circular column for our wrap-around moving-block bootstrap, its stationary
    column for the stationary bootstrap), rounded up to whole days.

    Never shorter than the horizon H: labels of days closer than H share future days. Never longer
    than n/2, so a resample is made of at least two blocks; when n < 2H that cap wins, and such a
    sample is too short for any block bootstrap to mean much. A series with no variation (nothing
    to estimate from) gets H.
    """
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; choose one of {METHODS}")
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    x = np.asarray(series, dtype=np.float64)
    x = x.reshape(len(x), -1)
    n = x.shape[0]
    if n < 4 or not np.all(np.isfinite(x)):
        raise ValueError(f"block length needs at least 4 finite days, got {n}")
    from arch.bootstrap import optimal_block_length

    varying = x[:, x.std(axis=0) > 0]
    estimate = 0.0
    if varying.shape[1]:
        estimates = optimal_block_length(varying)[ARCH_BOOTSTRAP[method]].to_numpy()
        finite = estimates[np.isfinite(estimates)]
        estimate = float(finite.max()) if len(finite) else 0.0
    return int(max(1, min(max(math.ceil(estimate), horizon), n // 2)))


# --- superior predictive ability -------------------------------------------------------------


@dataclass(frozen=True)
class SpaResult:
    """Hansen's SPA test of "no model beats the benchmark"; a small p-value says some model does.

    The three p-values differ in how models worse than the benchmark enter the null distribution:
    `upper` counts them all (White's Reality Check, conservative), `lower` none, `consistent`
    (Hansen's recommendation, the one to report) only those not clearly worse.
    """

    benchmark: str
    loss: str  # log_loss | brier: which per-day loss was compared
    models: tuple[str, ...]  # the models tested against the benchmark
    identical: tuple[str, ...]  # models whose losses equal the benchmark's on every day: not tested
    mean_improvement: dict[str, float]  # benchmark's mean loss minus the model's: > 0 is better
    pvalue_lower: float
    pvalue_consistent: float
    pvalue_upper: float
    better_models: tuple[str, ...]  # individually better than the benchmark at 5% (consistent)
    block_length: int
    replicates: int

    @property
    def pvalue(self) -> float:
        return self.pvalue_consistent


def _losses_matrix(losses: dict[str, ArrayLike], n: int | None = None) -> tuple[list[str], np.ndarray]:
    """Names and the (n, k) matrix of per-day losses, checked: same length, finite."""
    names = list(losses)
    columns = [np.asarray(losses[name], dtype=np.float64) for name in names]
    lengths = {len(c) for c in columns} | ({n} if n is not None else set())
    if len(lengths) != 1 or any(c.ndim != 1 for c in columns):
        raise ValueError(f"per-day losses must be 1-D of one common length; got lengths {sorted(lengths)}")
    matrix = np.stack(columns, axis=1) if columns else np.empty((n or 0, 0))
    if not np.all(np.isfinite(matrix)):
        raise ValueError("per-day losses contain NaN or Inf")
    return names, matrix


def spa_test(benchmark_losses: ArrayLike, model_losses: dict[str, ArrayLike], block: int, reps: int, seed: int,
             *, benchmark: str = "benchmark", loss: str = "log_loss", method: str = "moving-block") -> SpaResult:
    """Does some model beat the benchmark on these per-day losses, allowing for having tried them all?

    benchmark_losses: the benchmark's per-day losses (n,), the best baseline chosen on validation;
    model_losses: each model's (budget's answer) per-day losses on the same days. Block bootstrap
    of the loss differences with `block` days (`block_length`), `reps` replicates, seeded.

    arch's statistic is the largest mean loss difference (arch studentizes only to decide which
    models count as relevant, not the statistic itself); with models of one kind on one loss, their
    differences have similar spreads, so that is a fair maximum. A model whose losses equal the
    benchmark's on every day cannot beat it and would make arch's p-value degenerate (zero spread):
    it is listed in `identical` and left out; with no model left, every p-value is 1.
    """
    from arch.bootstrap import SPA

    bench = np.asarray(benchmark_losses, dtype=np.float64)
    if bench.ndim != 1 or not np.all(np.isfinite(bench)):
        raise ValueError("benchmark losses must be a finite 1-D array")
    names, matrix = _losses_matrix(model_losses, len(bench))
    same = np.all(matrix == bench[:, None], axis=0)
    tested = [name for name, s in zip(names, same, strict=True) if not s]
    improvement = {name: float(bench.mean() - matrix[:, i].mean()) for i, name in enumerate(names)}
    identical = tuple(name for name, s in zip(names, same, strict=True) if s)
    if not tested:
        return SpaResult(benchmark, loss, (), identical, improvement, 1.0, 1.0, 1.0, (), block, reps)
    spa = SPA(bench, matrix[:, ~same], block_size=block, reps=reps, bootstrap=ARCH_BOOTSTRAP[method], seed=seed)
    spa.compute()
    p = spa.pvalues
    better = tuple(tested[int(i)] for i in spa.better_models(pvalue=0.05, pvalue_type="consistent"))
    return SpaResult(benchmark, loss, tuple(tested), identical, improvement, float(p["lower"]),
                     float(p["consistent"]), float(p["upper"]), better, block, reps)


# --- model confidence set --------------------------------------------------------------------


@dataclass(frozen=True)
class McsResult:
    """The model confidence set: the models not shown worse than the best, at level 1 - size.

    A model's p-value is the largest size at which it is still in the set (1.0 for the last one
    standing); members have p-value > size. Models with identical per-day losses share one fate.
    """

    loss: str
    size: float  # 0.10: a 90% model confidence set
    members: tuple[str, ...]
    eliminated: tuple[str, ...]  # in the order they left the set
    pvalues: dict[str, float]
    block_length: int
    replicates: int


def _distinct_columns(names: list[str], matrix: np.ndarray) -> tuple[list[int], dict[str, int]]:
    """Representative columns of identical loss series, and each name's representative."""
    representatives: list[int] = []
    owner: dict[str, int] = {}
    for i, name in enumerate(names):
        match = next((r for r in representatives if np.array_equal(matrix[:, r], matrix[:, i])), None)
        if match is None:
            representatives.append(i)
            match = i
        owner[name] = match
    return representatives, owner


def model_confidence_set(losses: dict[str, ArrayLike], size: float = 0.10, *, block: int, reps: int, seed: int,
                         loss: str = "log_loss", method: str = "moving-block") -> McsResult:
    """Which models (budgets and baselines) could be the best, at confidence 1 - size?

    losses: every model's per-day losses on the same days. Hansen-Lunde-Nason's MCS with arch's
    "R" elimination rule (pairwise studentized differences), block bootstrap of `block` days.
    Equal models stay together in the set; a clearly worse one is eliminated. Identical loss
    series are tested once (arch cannot studentize a zero difference) and share the p-value.
    """
    from arch.bootstrap import MCS

    if not 0 < size < 1:
        raise ValueError(f"MCS size must be in (0, 1), got {size}")
    names, matrix = _losses_matrix(losses)
    if not names:
        raise ValueError("the model confidence set needs at least one model")
    representatives, owner = _distinct_columns(names, matrix)
    if len(representatives) == 1:
        p_of = {representatives[0]: 1.0}
        order = [representatives[0]]
    else:
        mcs = MCS(matrix[:, representatives], size=size, reps=reps, block_size=block, method="R",
                  bootstrap=ARCH_BOOTSTRAP[method], seed=seed)
        mcs.compute()
        table = mcs.pvalues["Pvalue"]
        p_of = {representatives[int(i)]: float(v) for i, v in table.items()}
        order = [representatives[int(i)] for i in table.index]
    pvalues = {name: p_of[owner[name]] for name in names}
    members = tuple(name for name in names if pvalues[name] > size)
    eliminated = tuple(name for r in order for name in names if owner[name] == r and pvalues[name] <= size)
    return McsResult(loss, size, members, eliminated, pvalues, block, reps)


# --- power -----------------------------------------------------------------------------------


def minimum_detectable_effect(standard_error: float, alpha: float = 0.05, power: float = 0.80) -> float:
    """The smallest true effect a two-sided test at level alpha detects with probability `power`.

    (z_{1-alpha/2} + z_{power}) x se: for the slope of AUC per decade of parameters and for the
    difference to the best baseline, se is the standard deviation of their bootstrap replicates.
    A verdict of "no significant effect" means little when this is larger than any plausible effect.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    if not standard_error >= 0:
        raise ValueError(f"the standard error must be >= 0, got {standard_error}")
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * standard_error


def bootstrap_standard_error(replicates: ArrayLike) -> float:
    """The standard deviation of the finite bootstrap replicates (NaN with fewer than two)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def detectable_from_replicates(replicates: ArrayLike, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect from bootstrap replicates (of a slope or a difference); NaN if too few."""
    se = bootstrap_standard_error(replicates)
    return minimum_detectable_effect(se, alpha, power) if math.isfinite(se) else float("nan")


@dataclass(frozen=True)
class Projection:
    """What a target interval width would need, under the scaling stated in `assumption`."""

    target_width: float
    folds: int | None  # folds OF TODAY'S LENGTH needed at the current seeds (test days grow with them)
    seeds: int | None  # seeds needed at the current test days; None: seeds alone cannot reach the target
    assumption: str
    test_days: int | None = None  # pooled test days needed at the current seeds, when current_days was given


def _needed(current: int, share: float, ratio: float) -> int | None:
    """How large a count must grow when `share` of the variance scales as 1/count and the rest stays.

    ratio: how many times today's variance must shrink. None when the part that stays is already
    larger than the target variance.
    """
    if ratio <= 1:
        return current
    allowed = 1 / ratio - (1 - share)  # the shrinking part's share of today's variance at the target
    if allowed <= 0:
        return None
    return max(current, math.ceil(share * current / allowed - 1e-9))


def folds_and_seeds_needed(current_width: float, target_width: float, current_folds: int, current_seeds: int,
                           seed_share: float = 0.0, current_days: int | None = None) -> Projection:
    """How many test days (as folds of today's length), or seeds, would narrow an interval to `target_width`.

    Assumption (a rough guide for `evaluate --dry-run`, not a promise): the interval's variance has a
    sampling part (which test days were drawn) that shrinks as 1/test days, and a seed part (training
    noise, `seed_share` of the variance, 0 when unknown) that shrinks as 1/seeds; width is the square
    root. Only more test days shrink the sampling part: cutting the same test period into more folds
    adds no days, so `folds` counts folds of today's length (an earlier start of the test period, or
    more history). More seeds never shrink the sampling part, so they alone may not reach a target.
    Regime changes between years are ignored: new years may add spread rather than remove it.
    """
    if not (current_width > 0 and target_width > 0 and current_folds >= 1 and current_seeds >= 1):
        raise ValueError("widths must be > 0, folds and seeds >= 1")
    if not 0 <= seed_share <= 1:
        raise ValueError(f"seed_share is a fraction of the variance in [0, 1], got {seed_share}")
    ratio = (current_width / target_width) ** 2  # the variance must shrink by this factor
    days = None if current_days is None else _needed(current_days, 1 - seed_share, ratio)
    assumption = (f"variance ~ {1 - seed_share:.0%} sampling (1/test days) + {seed_share:.0%} seeds (1/seeds); "
                  "folds of today's length; no regime change")
    return Projection(target_width, _needed(current_folds, 1 - seed_share, ratio),
                      _needed(current_seeds, seed_share, ratio), assumption, days)


# --- calibration -----------------------------------------------------------------------------


class ReliabilityBin(NamedTuple):
    mean_predicted: float
    observed_rate: float
    count: int


def _bin_index(p: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    """The bin of every probability: equal-width bins of [0, 1], or bins of equal counts."""
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
    else:
        raise ValueError(f"unknown binning {strategy!r}; choose uniform or quantile")
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))


def reliability_curve(labels: ArrayLike, probs: ArrayLike, bins: int = 10,
                      strategy: str = "quantile") -> list[ReliabilityBin]:
    """(mean predicted, observed rate, count) per non-empty bin, in order of the predictions.

    A calibrated model's points lie on the diagonal. Bins hold equal counts by default: predicted
    probabilities of daily direction sit in a narrow band around the base rate, where equal-width
    bins of [0, 1] would put nearly every day into one or two bins ("uniform" gives those).
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels and probabilities must be 1-D of one non-zero length; got {y.shape} and {p.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    index = _bin_index(p, bins, strategy)
    curve = []
    for b in np.unique(index):
        in_bin = index == b
        curve.append(ReliabilityBin(float(p[in_bin].mean()), float(y[in_bin].mean()), int(in_bin.sum())))
    return curve


@dataclass(frozen=True)
class BrierDecomposition:
    """Murphy's decomposition: brier ~ reliability - resolution + uncertainty.

    reliability: miscalibration (0 is perfect); resolution: how far the binned observed rates move
    from the base rate (higher is better); uncertainty: base rate x (1 - base rate), the Brier score
    of always predicting the base rate. The identity is exact only when predictions are constant
    within each bin; `brier` is the exact score.
    """

    brier: float
    reliability: float
    resolution: float
    uncertainty: float


def brier_decomposition(labels: ArrayLike, probs: ArrayLike, bins: int = 10,
                        strategy: str = "quantile") -> BrierDecomposition:
    """The Brier score and its decomposition over the reliability curve's bins."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    curve = reliability_curve(y, p, bins, strategy)
    n = len(y)
    base = float(y.mean())
    reliability = sum(b.count * (b.mean_predicted - b.observed_rate) ** 2 for b in curve) / n
    resolution = sum(b.count * (b.observed_rate - base) ** 2 for b in curve) / n
    return BrierDecomposition(float(np.mean((p - y) ** 2)), reliability, resolution, base * (1 - base))
