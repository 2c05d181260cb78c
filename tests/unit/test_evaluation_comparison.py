"""Model-comparison statistics: per-day losses, Politis-White block length, SPA, MCS, power, calibration.

Every random input is seeded; bootstrap replicates are few (300) so the file runs in seconds.
"""

from __future__ import annotations

import math
from importlib.metadata import version
from statistics import NormalDist

import numpy as np
import pytest
from packaging.version import Version
from sklearn.metrics import roc_auc_score

from coordinator.evaluation.bootstrap import day_counts, percentile_interval, slope_per_decade, weighted_auc
from coordinator.evaluation.comparison import (
    ARCH_BOOTSTRAP,
    block_length,
    bootstrap_standard_error,
    brier_decomposition,
    detectable_from_replicates,
    folds_and_seeds_needed,
    minimum_detectable_effect,
    model_confidence_set,
    per_day_losses,
    reliability_curve,
    spa_test,
)
from coordinator.studies.metrics import EPS, binary_metrics, log_loss
from tests.unit.test_evaluation_bootstrap import overlapping_window_series

REPS = 300


def ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = noise[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def noisy_losses(n: int, seed: int, shifts: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A common, autocorrelated loss level per day, plus each model's own noise and constant shift."""
    rng = np.random.default_rng(seed)
    common = 0.69 + 0.05 * ar1(0.5, n, seed + 1)
    models = {name: common + shift + rng.normal(0, 0.02, n) for name, shift in shifts.items()}
    return common + rng.normal(0, 0.02, n), models


# --- the arch adapter -----------------------------------------------------------------------------


def test_arch_is_in_the_tested_version_range_and_names_its_block_lengths_as_we_read_them() -> None:
    from arch.bootstrap import optimal_block_length

    assert Version("8.0") <= Version(version("arch")) < Version("9")
    table = optimal_block_length(np.random.default_rng(0).standard_normal((200, 2)))
    assert set(ARCH_BOOTSTRAP.values()) <= set(table.columns)


# --- per-day losses -------------------------------------------------------------------------------


def test_per_day_losses_average_to_the_metrics_of_the_whole_period() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(400) < 0.55).astype(float)
    probs = np.clip(0.55 + rng.normal(0, 0.1, 400), 0, 1)
    probs[:2] = [0.0, 1.0]  # clipped, so the log loss stays finite
    losses = per_day_losses(labels, probs)
    assert losses["log_loss"].shape == losses["brier"].shape == (400,)
    assert np.all(np.isfinite(losses["log_loss"]))
    assert losses["log_loss"].mean() == pytest.approx(log_loss(labels, probs))
    assert losses["brier"].mean() == pytest.approx(binary_metrics(labels, probs)["val_brier"])
    assert losses["log_loss"].max() <= -np.log(EPS) + 1e-9


def test_per_day_losses_with_seeds_are_the_mean_of_each_seeds_loss() -> None:
    rng = np.random.default_rng(4)
    labels = (rng.random(50) < 0.5).astype(float)
    seeds = rng.random((3, 50))
    together = per_day_losses(labels, seeds)
    apart = [per_day_losses(labels, p) for p in seeds]
    for key in ("log_loss", "brier"):
        np.testing.assert_allclose(together[key], np.mean([a[key] for a in apart], axis=0))
    with pytest.raises(ValueError, match="align"):
        per_day_losses(labels, seeds[:, :40])


# --- block length ---------------------------------------------------------------------------------


def test_block_length_is_longer_for_a_persistent_series() -> None:
    weak, strong = block_length(ar1(0.1, 2000, 7), horizon=1), block_length(ar1(0.9, 2000, 7), horizon=1)
    assert isinstance(strong, int) and isinstance(weak, int)
    assert strong > weak


def test_block_length_is_never_shorter_than_the_horizon_nor_longer_than_half_the_days() -> None:
    noise = np.random.default_rng(8).standard_normal(1000)
    assert block_length(noise, horizon=20) == 20
    assert block_length(ar1(0.99, 30, 9), horizon=20) == 15  # n < 2H: at least two blocks
    assert block_length(np.ones(100), horizon=5) == 5  # nothing to estimate from
    assert block_length(noise, horizon=1, method="stationary") >= 1
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        block_length(noise, horizon=1, method="iid")


def test_block_length_of_several_series_is_the_longest() -> None:
    both = np.column_stack([ar1(0.1, 2000, 10), ar1(0.9, 2000, 11)])
    assert block_length(both, horizon=1) == block_length(both[:, 1], horizon=1)
    assert block_length(both, horizon=1) > block_length(both[:, 0], horizon=1)


# --- SPA ------------------------------------------------------------------------------------------


def test_spa_rejects_when_one_model_is_clearly_better() -> None:
    bench, models = noisy_losses(1500, 20, {"small": 0.01, "large": -0.01})
    result = spa_test(bench, models, block=10, reps=REPS, seed=1, benchmark="logistic")
    assert result.pvalue < 0.05
    assert result.pvalue_lower <= result.pvalue_consistent <= result.pvalue_upper
    assert result.models == ("small", "large")
    assert result.better_models == ("large",)
    assert result.mean_improvement["large"] > 0 > result.mean_improvement["small"]
    assert (result.benchmark, result.block_length, result.replicates) == ("logistic", 10, REPS)


def test_spa_does_not_reject_when_models_equal_the_benchmark() -> None:
    bench, models = noisy_losses(1500, 21, {"small": 0.0, "large": 0.0})
    result = spa_test(bench, models, block=10, reps=REPS, seed=1)
    assert result.pvalue > 0.05
    assert result.better_models == ()


def test_spa_leaves_out_a_model_identical_to_the_benchmark() -> None:
    bench, models = noisy_losses(500, 22, {"worse": 0.01})
    result = spa_test(bench, {"copy": bench.copy()}, block=10, reps=REPS, seed=1)
    assert (result.models, result.identical, result.pvalue) == ((), ("copy",), 1.0)
    mixed = spa_test(bench, {"copy": bench.copy(), **models}, block=10, reps=REPS, seed=1)
    assert mixed.models == ("worse",) and mixed.identical == ("copy",)
    with pytest.raises(ValueError, match="common length"):
        spa_test(bench, {"short": bench[:-1]}, block=10, reps=REPS, seed=1)


# --- MCS ------------------------------------------------------------------------------------------


def test_mcs_keeps_equal_models_and_eliminates_a_clearly_worse_one() -> None:
    _, models = noisy_losses(1500, 30, {"a": 0.0, "b": 0.0, "c": 0.0, "worse": 0.02})
    result = model_confidence_set(models, size=0.10, block=10, reps=REPS, seed=2)
    assert set(result.members) == {"a", "b", "c"}
    assert result.eliminated == ("worse",)
    assert result.pvalues["worse"] <= 0.10 < min(result.pvalues[m] for m in ("a", "b", "c"))
    assert max(result.pvalues.values()) == 1.0


def test_mcs_gives_identical_models_one_fate() -> None:
    _, models = noisy_losses(800, 31, {"a": 0.0, "worse": 0.03})
    result = model_confidence_set({**models, "a_again": models["a"].copy()}, block=10, reps=REPS, seed=2)
    assert result.pvalues["a"] == result.pvalues["a_again"]
    assert set(result.members) == {"a", "a_again"}
    alone = model_confidence_set({"only": models["a"]}, block=10, reps=REPS, seed=2)
    assert alone.members == ("only",) and alone.eliminated == ()


# --- power ----------------------------------------------------------------------------------------


def test_minimum_detectable_effect_is_the_sum_of_the_two_normal_quantiles_times_the_standard_error() -> None:
    z = NormalDist()
    se = 0.0123
    assert minimum_detectable_effect(se) == pytest.approx((z.inv_cdf(0.975) + z.inv_cdf(0.80)) * se)
    assert minimum_detectable_effect(se, alpha=0.10, power=0.90) == pytest.approx((z.inv_cdf(0.95) + z.inv_cdf(0.90)) * se)


def test_a_true_effect_of_the_minimum_detectable_size_is_detected_80_percent_of_the_time() -> None:
    rng = np.random.default_rng(40)
    se = 0.02
    estimates = rng.normal(minimum_detectable_effect(se), se, 20000)
    detected = np.abs(estimates / se) > NormalDist().inv_cdf(0.975)
    assert detected.mean() == pytest.approx(0.80, abs=0.01)


def test_detectable_slope_per_decade_comes_from_the_slope_replicates() -> None:
    rng = np.random.default_rng(41)
    sizes = [1e5, 1e6, 1e7]
    replicates = 0.55 + rng.normal(0, 0.01, (REPS, 3))  # per-replicate AUC of three budgets
    slopes = slope_per_decade(sizes, replicates)
    assert bootstrap_standard_error(slopes) == pytest.approx(np.std(slopes, ddof=1))
    assert detectable_from_replicates(slopes) == pytest.approx(minimum_detectable_effect(np.std(slopes, ddof=1)))
    assert np.isnan(detectable_from_replicates([np.nan, 0.1]))


def test_folds_and_seeds_needed_follow_the_square_root_rule() -> None:
    halve = folds_and_seeds_needed(0.12, 0.06, current_folds=3, current_seeds=3, current_days=639)
    assert (halve.folds, halve.test_days) == (12, 4 * 639)  # half the width: four times the days
    assert halve.seeds is None  # all of the variance is sampling: seeds cannot help
    seeds_only = folds_and_seeds_needed(0.12, 0.06, current_folds=3, current_seeds=3, seed_share=1.0)
    assert (seeds_only.folds, seeds_only.seeds, seeds_only.test_days) == (None, 12, None)
    wide = folds_and_seeds_needed(0.05, 0.10, current_folds=3, current_seeds=2)
    assert (wide.folds, wide.seeds) == (3, 2)
    assert "1/test days" in wide.assumption


def test_folds_and_seeds_needed_reach_the_target_width_under_their_own_assumption() -> None:
    share, f0, s0, width = 0.4, 4, 5, 0.10
    p = folds_and_seeds_needed(width, 0.09, current_folds=f0, current_seeds=s0, seed_share=share)
    assert p.folds is not None and p.seeds is not None and p.folds > f0 and p.seeds > s0

    def projected_width(folds: int, seeds: int) -> float:
        return width * math.sqrt((1 - share) * f0 / folds + share * s0 / seeds)

    assert projected_width(p.folds, s0) <= 0.09 < projected_width(p.folds - 1, s0)
    assert projected_width(f0, p.seeds) <= 0.09 < projected_width(f0, p.seeds - 1)


# --- calibration ----------------------------------------------------------------------------------


def test_reliability_curve_of_a_calibrated_model_lies_on_the_diagonal() -> None:
    rng = np.random.default_rng(50)
    probs = rng.uniform(0.3, 0.7, 20000)
    labels = (rng.random(20000) < probs).astype(float)
    curve = reliability_curve(labels, probs, bins=10)
    assert len(curve) == 10 and sum(b.count for b in curve) == 20000
    assert all(abs(b.mean_predicted - b.observed_rate) < 0.03 for b in curve)
    assert [b.mean_predicted for b in curve] == sorted(b.mean_predicted for b in curve)
    uniform = reliability_curve(labels, probs, bins=10, strategy="uniform")
    assert len(uniform) == 4  # only [0.3, 0.7] is occupied


def test_brier_decomposition_adds_up_when_predictions_are_constant_within_bins() -> None:
    rng = np.random.default_rng(51)
    probs = rng.choice([0.2, 0.5, 0.8], 5000)
    labels = (rng.random(5000) < np.where(probs == 0.8, 0.6, probs)).astype(float)  # overconfident at 0.8
    parts = brier_decomposition(labels, probs, bins=10, strategy="uniform")
    assert parts.brier == pytest.approx(binary_metrics(labels, probs)["val_brier"])
    assert parts.brier == pytest.approx(parts.reliability - parts.resolution + parts.uncertainty)
    assert parts.reliability > 0.005  # the 0.8 bin observes about 0.6


def test_the_automatic_block_gives_an_interval_near_the_true_width_on_overlapping_windows() -> None:
    # The truth: the spread of the AUC over many independent series of the same process (H = 10).
    horizon, n = 10, 800
    true_width = 2 * 1.96 * np.std([roc_auc_score(*overlapping_window_series(n, horizon, seed=1000 + s)) for s in range(200)])
    widths, blocks = [], []
    for seed in range(4):
        labels, scores = overlapping_window_series(n, horizon, seed)
        probs = 1 / (1 + np.exp(-0.15 * scores))
        weaker = 1 / (1 + np.exp(-0.05 * (scores + 3 * np.random.default_rng(seed + 50).standard_normal(n))))
        difference = per_day_losses(labels, probs)["log_loss"] - per_day_losses(labels, weaker)["log_loss"]
        blocks.append(block_length(difference, horizon))
        counts = day_counts(n, blocks[-1], 1000, np.random.default_rng(seed))
        low, high = percentile_interval(weighted_auc(labels, scores, counts))
        widths.append(high - low)
    assert min(blocks) >= horizon
    assert abs(np.mean(widths) - true_width) < 0.15 * true_width, (widths, true_width, blocks)
