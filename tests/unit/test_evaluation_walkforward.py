"""The walk-forward answer on constructed predictions: pooled days, folds won, SPA and MCS, power in
the sentence, calibration per model."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.evaluation import comparison
from coordinator.evaluation.protocol import BootstrapSpec
from coordinator.evaluation.verdict import BaselineScores, ConfigRuns
from coordinator.evaluation.walkforward import FoldPeriod, walk_forward_answer

FOLDS = [FoldPeriod(1, "2010-01-04", "2011-12-30", 300), FoldPeriod(2, "2012-01-03", "2013-12-31", 300),
         FoldPeriod(3, "2014-01-02", "2015-12-31", 300)]
N = sum(f.n_days for f in FOLDS)


def market(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels driven by a persistent signal (so days are autocorrelated), and that signal."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(N)
    for t in range(1, N):
        signal[t] = 0.8 * signal[t - 1] + rng.normal()
    labels = (signal + rng.normal(scale=2.0, size=N) > 0).astype(np.float64)
    return labels, signal


def probabilities(signal: np.ndarray, strength: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1.0 / (1.0 + np.exp(-(strength * signal + rng.normal(scale=noise, size=len(signal)))))


def config(study: str, budget: str, n_params: int, predictions: list[np.ndarray], val: float = 0.6) -> ConfigRuns:
    return ConfigRuns(study_name=study, budget=budget, budget_params=n_params, rank=1, trial_number=0, n_params=n_params,
                      direction="maximize", val_objective=[val] * len(predictions), test_predictions=predictions)


def test_a_clearly_better_budget_is_found_by_spa_and_alone_in_the_confidence_set() -> None:
    labels, signal = market()
    strong = [probabilities(signal, 0.5, 0.05, s) for s in range(2)]
    weak = [probabilities(signal, 0.02, 1.0, 10 + s) for s in range(2)]
    baseline = probabilities(signal, 0.02, 1.0, 99)
    answer = walk_forward_answer(
        1, labels, FOLDS, [config("s-10K", "10K", 10_000, weak), config("s-1M", "1M", 1_000_000, strong, val=0.7)],
        [BaselineScores("logistic_regression", 0.55, baseline), BaselineScores("base_rate", 0.5, np.full(N, labels.mean()))],
        BootstrapSpec(replicates=300, block_rule="politis-white"))
    v = answer.verdict
    assert v.n_test == N and v.block_length >= 1
    assert answer.spa_pvalue is not None and answer.spa_pvalue < 0.05
    assert answer.mcs == ["s-1M"]
    assert answer.folds_won == 3 and v.answer is not None and v.answer.runs.study_name == "s-1M"
    assert len(answer.fold_scores) == 3 * 4  # 2 answers + 2 baselines, per fold
    assert v.slope is not None and v.slope.low > 0
    # Power: (z_0.975 + z_0.8) x the bootstrap standard error, and said in the sentence.
    assert answer.mde_slope == pytest.approx(comparison.minimum_detectable_effect(v.slope.se))
    assert f"a slope of {answer.mde_slope:.3f} per decade or more would have been detected" in v.sentence
    assert f"{N} test days pooled over 3 walk-forward folds" in v.sentence and "in 3 of 3 folds" in v.sentence
    by_model = {m.model: m for m in answer.models}
    assert by_model["s-1M"].log_loss < by_model["logistic_regression"].log_loss
    assert sum(b["count"] for b in by_model["s-1M"].reliability) == N


def test_equal_models_are_not_told_apart() -> None:
    labels, signal = market(1)
    same = probabilities(signal, 0.1, 0.5, 5)
    answer = walk_forward_answer(
        5, labels, FOLDS, [config("s-10K", "10K", 10_000, [same]), config("s-1M", "1M", 1_000_000, [same])],
        [BaselineScores("logistic_regression", 0.55, same)], BootstrapSpec(replicates=300, block_rule="politis-white"))
    assert answer.spa_pvalue is not None and answer.spa_pvalue > 0.1
    assert set(answer.mcs) == {"s-10K", "s-1M", "logistic_regression"}
    assert answer.verdict.block_length >= 5  # never shorter than H
    assert answer.folds_won == 0  # equal is not better
