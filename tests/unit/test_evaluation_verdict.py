"""The scaling verdict on constructed results: flat, rising, below and above the baseline."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.evaluation.protocol import BootstrapSpec
from coordinator.evaluation.verdict import BaselineScores, ConfigRuns, summarise_horizon

N_TEST = 1000
BOOT = BootstrapSpec(replicates=500, block_length=20)


def scored(labels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose AUC grows with `strength` (0: chance)."""
    z = strength * (labels - 0.5) + rng.standard_normal(len(labels))
    return 1 / (1 + np.exp(-z))


def make_case(strengths: dict[int, float], baseline_strength: float, seed: int = 0, seeds: int = 5):
    rng = np.random.default_rng(seed)
    labels = (rng.random(N_TEST) < 0.4).astype(float)
    configs = []
    for size, strength in strengths.items():
        label = f"{size // 1000}K"
        configs.append(ConfigRuns(
            study_name=f"synth-{label}-h1", budget=label, budget_params=size, rank=1, trial_number=7, n_params=size,
            direction="maximize", val_objective=[0.6 + 0.01 * strength] * seeds,
            test_predictions=[scored(labels, strength, rng) for _ in range(seeds)],
        ))
    baselines = [
        BaselineScores("volatility", 0.7, scored(labels, baseline_strength, rng)),
        BaselineScores("logistic_regression", 0.6, scored(labels, 0.2, rng)),
        BaselineScores("base_rate", 0.5, np.full(N_TEST, 0.4)),
    ]
    return labels, configs, baselines


def test_flat_sizes_give_no_significant_gain() -> None:
    labels, configs, baselines = make_case({100_000: 0.8, 1_000_000: 0.8, 10_000_000: 0.8}, baseline_strength=0.8)
    v = summarise_horizon(1, labels, configs, baselines, BOOT)
    assert v.slope is not None and v.slope.low < 0 < v.slope.high
    assert v.sentence.startswith("no significant gain with size at H = 1: slope ")
    assert "per decade, 95% CI [" in v.sentence
    assert "level with the volatility baseline" in v.sentence  # the best baseline on validation, named
    assert v.best_baseline is not None and v.best_baseline.model == "volatility"
    base_rate = next(b for b in v.baselines if b.model == "base_rate")
    assert base_rate.test_auc.value == 0.5 and not base_rate.best
    assert v.block_length == 20 and v.n_test == N_TEST


def test_rising_sizes_give_a_positive_slope() -> None:
    labels, configs, baselines = make_case({100_000: 0.2, 1_000_000: 0.8, 10_000_000: 1.6}, baseline_strength=0.5)
    v = summarise_horizon(3, labels, configs, baselines, BOOT)
    assert v.slope is not None and v.slope.low > 0
    assert v.sentence.startswith("AUC rises with size at H = 3: slope +0.")
    # The answer is the best on validation (the 10M model here), above the volatility baseline.
    assert v.answer is not None and v.answer.runs.budget == "10000K"
    assert "is above the volatility baseline by" in v.sentence
    aucs = [s.test_auc.value for s in sorted(v.configs, key=lambda s: s.runs.n_params)]
    assert aucs == sorted(aucs)
    for s in v.configs:  # intervals contain their point and are not degenerate
        assert s.test_auc.low < s.test_auc.value < s.test_auc.high
        assert s.test_pr_auc.low < s.test_pr_auc.value < s.test_pr_auc.high


def test_below_the_baseline_is_said_with_its_interval() -> None:
    labels, configs, baselines = make_case({100_000: 0.3, 1_000_000: 0.3}, baseline_strength=1.5)
    v = summarise_horizon(5, labels, configs, baselines, BOOT)
    assert "is below the volatility baseline by 0." in v.sentence
    d = v.answer.vs_best_baseline
    assert d is not None and d.high < 0
    # The sentence prints the gap as a positive number with the interval flipped to match.
    assert f"by {-d.value:.3f} [{-d.high:.3f}, {-d.low:.3f}]" in v.sentence
    assert v.block_length == 20  # max(20, H)


def test_block_length_is_never_shorter_than_the_horizon() -> None:
    labels, configs, baselines = make_case({100_000: 0.5}, baseline_strength=0.5)
    v = summarise_horizon(30, labels, configs, baselines, BOOT)
    assert v.block_length == 30
    assert v.slope is None and "one model size only at H = 30" in v.sentence


def test_the_study_answer_is_chosen_on_validation_not_test() -> None:
    rng = np.random.default_rng(2)
    labels = (rng.random(N_TEST) < 0.4).astype(float)
    good_on_test = ConfigRuns("s", "1K", 1000, 1, 3, 1000, "maximize", [0.55] * 3, [scored(labels, 2.0, rng) for _ in range(3)])
    good_on_val = ConfigRuns("s", "1K", 1000, 2, 9, 1000, "maximize", [0.60] * 3, [scored(labels, 0.1, rng) for _ in range(3)])
    v = summarise_horizon(1, labels, [good_on_test, good_on_val], [], BOOT)
    chosen = [s for s in v.configs if s.chosen]
    assert [s.runs.rank for s in chosen] == [2]
    assert v.sentence.endswith("no baseline to compare with")
    # The seed spread is reported per configuration.
    assert all(s.test_auc_sd >= 0 for s in v.configs)


@pytest.mark.parametrize("direction,expected_rank", [("maximize", 2), ("minimize", 1)])
def test_direction_of_the_objective_is_respected(direction: str, expected_rank: int) -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.4).astype(float)
    a = ConfigRuns("s", "1K", 1000, 1, 3, 1000, direction, [0.4, 0.4], [scored(labels, 1, rng) for _ in range(2)])
    b = ConfigRuns("s", "1K", 1000, 2, 4, 1000, direction, [0.6, 0.6], [scored(labels, 1, rng) for _ in range(2)])
    v = summarise_horizon(1, labels, [a, b], [], BOOT)
    assert [s.runs.rank for s in v.configs if s.chosen] == [expected_rank]
