"""From evaluation runs to the answer: intervals per configuration and a scaling verdict per horizon.

Pure computation on arrays (no database): `summarise_horizon` takes, for one dataset version and one
horizon, the test labels, every evaluated configuration's per-seed test predictions, and the
baselines' test predictions, and returns the numbers and the sentence.

One set of resampled test days (block bootstrap, `coordinator.evaluation.bootstrap`) is drawn per
horizon and shared by every configuration and baseline, so differences and slopes are paired:
- a configuration's interval: days by blocks AND its seeds with replacement, mean-over-seeds metric;
- a baseline's interval: days only (a baseline is one deterministic fit);
- difference to the best baseline: per replicate, configuration minus baseline on the same days;
- slope per decade of parameters: per replicate, least squares of the studies' AUCs on log10(params).

Which configuration answers for a study is decided on validation, never on test: the one of its
top k whose mean validation objective over the evaluation seeds is best. The best baseline is the
one with the highest validation AUC. The base rate is the AUC 0.5 reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from coordinator.evaluation.bootstrap import (
    day_counts,
    metric_replicates,
    percentile_interval,
    seed_draws,
    slope_per_decade,
    weighted_auc,
    weighted_average_precision,
)
from coordinator.evaluation.comparison import bootstrap_standard_error
from coordinator.evaluation.protocol import BootstrapSpec


@dataclass(frozen=True)
class ConfigRuns:
    """One evaluated configuration of one study: its S runs' test predictions and validation values."""

    study_name: str
    budget: str
    budget_params: int
    rank: int  # 1 = the study's best trial by its objective
    trial_number: int
    n_params: int
    direction: str  # the study objective's direction: maximize | minimize
    val_objective: list[float]  # per seed, at the run's best epoch
    test_predictions: list[np.ndarray]  # per seed, aligned with the horizon's test labels
    under_trained: int = 0  # runs whose best epoch was their last one


@dataclass(frozen=True)
class BaselineScores:
    model: str
    val_auc: float
    test_predictions: np.ndarray


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    se: float | None = None  # the bootstrap standard error (sd of the replicates), for the power statement

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class ConfigSummary:
    runs: ConfigRuns
    chosen: bool  # answers for its study (best mean validation objective of the study's top k)
    test_auc: Interval  # mean over seeds; interval from days x seeds
    test_auc_sd: float  # over seeds, on all test days
    test_pr_auc: Interval
    vs_best_baseline: Interval | None  # test AUC minus the best baseline's, paired


@dataclass(frozen=True)
class BaselineSummary:
    model: str
    val_auc: float
    test_auc: Interval
    test_pr_auc: Interval
    best: bool


@dataclass(frozen=True)
class HorizonVerdict:
    horizon: int
    block_length: int
    replicates: int
    n_test: int
    configs: list[ConfigSummary]
    baselines: list[BaselineSummary]
    slope: Interval | None  # AUC per decade of parameters over the studies' chosen configurations
    answer: ConfigSummary | None  # the chosen configuration with the best validation objective
    sentence: str
    notes: list[str] = field(default_factory=list)

    @property
    def best_baseline(self) -> BaselineSummary | None:
        return next((b for b in self.baselines if b.best), None)


def summarise_horizon(horizon: int, labels: np.ndarray, configs: list[ConfigRuns], baselines: list[BaselineScores],
                      bootstrap: BootstrapSpec, note: str | None = None, block_length: int | None = None) -> HorizonVerdict:
    """`block_length` None: the protocol's fixed rule (`bootstrap.block_for`); else that block length
    (an automatic choice, already at least H)."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    block = bootstrap.block_for(horizon) if block_length is None else block_length
    rng = np.random.default_rng([bootstrap.seed, horizon])
    counts = day_counts(n, block, bootstrap.replicates, rng, bootstrap.method)
    every_day = np.ones((1, n))

    def interval(point: float, replicates: np.ndarray) -> Interval:
        low, high = percentile_interval(replicates, bootstrap.level)
        return Interval(point, low, high, bootstrap_standard_error(replicates))

    base_summaries, base_auc_reps = [], {}
    for b in baselines:
        p = np.asarray(b.test_predictions, dtype=np.float64)
        auc_reps = weighted_auc(labels, p, counts)
        base_auc_reps[b.model] = auc_reps
        base_summaries.append((b, interval(float(weighted_auc(labels, p, every_day)[0]), auc_reps),
                               interval(float(weighted_average_precision(labels, p, every_day)[0]),
                                        weighted_average_precision(labels, p, counts))))
    contenders = [b for b in baselines if b.model != "base_rate"]
    best_model = max(contenders, key=lambda b: b.val_auc).model if contenders else None
    baseline_summaries = [BaselineSummary(b.model, b.val_auc, auc, pr, b.model == best_model) for b, auc, pr in base_summaries]

    chosen_ranks = choose_per_study(configs)
    summaries, auc_reps_of = [], {}
    for c in configs:
        preds = [np.asarray(p, dtype=np.float64) for p in c.test_predictions]
        draws = seed_draws(len(preds), bootstrap.replicates, rng)
        per_seed_auc = [float(weighted_auc(labels, p, every_day)[0]) for p in preds]
        auc_reps = metric_replicates("auc", labels, preds, counts, draws)
        pr_reps = metric_replicates("pr_auc", labels, preds, counts, draws)
        per_seed_pr = [float(weighted_average_precision(labels, p, every_day)[0]) for p in preds]
        point = float(np.mean(per_seed_auc))
        vs = None
        if best_model is not None:
            vs = interval(point - float(weighted_auc(labels, np.asarray(next(b for b in baselines if b.model == best_model).test_predictions,
                                                                          dtype=np.float64), every_day)[0]),
                          auc_reps - base_auc_reps[best_model])
        auc_reps_of[(c.study_name, c.rank)] = auc_reps
        summaries.append(ConfigSummary(
            runs=c,
            chosen=chosen_ranks.get(c.study_name) == c.rank,
            test_auc=interval(point, auc_reps),
            test_auc_sd=float(np.std(per_seed_auc, ddof=1)) if len(per_seed_auc) > 1 else float("nan"),
            test_pr_auc=interval(float(np.mean(per_seed_pr)), pr_reps),
            vs_best_baseline=vs,
        ))

    chosen = sorted((s for s in summaries if s.chosen), key=lambda s: s.runs.n_params)
    slope = None
    if len({s.runs.n_params for s in chosen}) >= 2:
        sizes = [s.runs.n_params for s in chosen]
        points = np.array([s.test_auc.value for s in chosen])
        reps = np.stack([auc_reps_of[(s.runs.study_name, s.runs.rank)] for s in chosen], axis=1)
        slope = interval(float(slope_per_decade(sizes, points)), slope_per_decade(sizes, reps))
    answer = best_on_validation(chosen)
    best = next((b for b in baseline_summaries if b.best), None)
    notes = [note] if note else []
    under = sum(s.runs.under_trained for s in summaries)
    if under:
        notes.append(f"{under} evaluation run(s) had their best epoch at the last epoch (under-trained: more epochs might help)")
    verdict_sentence = sentence(horizon, slope, answer, best, level=bootstrap.level)
    return HorizonVerdict(horizon, block, bootstrap.replicates, n, summaries, baseline_summaries, slope, answer,
                          verdict_sentence, notes)


def choose_per_study(configs: list[ConfigRuns]) -> dict[str, int]:
    """study -> rank of its configuration with the best mean validation objective (ties: lower rank)."""
    chosen: dict[str, tuple[float, int]] = {}
    for c in configs:
        mean = float(np.mean(c.val_objective))
        key = (-mean if c.direction == "maximize" else mean, c.rank)
        if c.study_name not in chosen or key < chosen[c.study_name]:
            chosen[c.study_name] = key
    return {study: rank for study, (_, rank) in chosen.items()}


def best_on_validation(chosen: list[ConfigSummary]) -> ConfigSummary | None:
    """The chosen configuration with the best mean validation objective across budgets."""
    if not chosen:
        return None
    def key(s: ConfigSummary) -> float:
        mean = float(np.mean(s.runs.val_objective))
        return -mean if s.runs.direction == "maximize" else mean
    return min(chosen, key=key)


def fmt(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def sentence(horizon: int, slope: Interval | None, answer: ConfigSummary | None, best: BaselineSummary | None,
             level: float = 0.95) -> str:
    """One plain sentence of what the data support at this horizon."""
    ci = f"{level:.0%} CI"
    if answer is None:
        return f"H = {horizon}: nothing evaluated yet."
    if slope is None:
        size = f"one model size only at H = {horizon} ({answer.runs.budget}): no slope to fit"
    else:
        trend = "AUC rises with size" if slope.low > 0 else "AUC falls with size" if slope.high < 0 else "no significant gain with size"
        size = (f"{trend} at H = {horizon}: slope {fmt(slope.value, True)} per decade, "
                f"{ci} [{fmt(slope.low, True)}, {fmt(slope.high, True)}]")
    if best is None or answer.vs_best_baseline is None:
        return size + "; no baseline to compare with"
    d = answer.vs_best_baseline
    who = f"the {answer.runs.budget} model (best on validation), test AUC {fmt(answer.test_auc.value)}"
    if d.low > 0:
        versus = f"{who}, is above the {best.model} baseline by {fmt(d.value)} [{fmt(d.low)}, {fmt(d.high)}]"
    elif d.high < 0:
        versus = f"{who}, is below the {best.model} baseline by {fmt(-d.value)} [{fmt(-d.high)}, {fmt(-d.low)}]"
    else:
        versus = (f"{who}, is level with the {best.model} baseline: difference {fmt(d.value, True)} "
                  f"[{fmt(d.low, True)}, {fmt(d.high, True)}]")
    return f"{size}; {versus}."
