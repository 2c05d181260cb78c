"""The walk-forward answer of one horizon: pooled test days, per-fold scores, model comparison, power.

Pure computation on arrays (no database). The caller hands over the pooled test days of every fold
in order (each day predicted once per model, by the model trained before its fold), every evaluated
configuration's per-seed predictions on those days, and every baseline's (re-fitted per fold). Then:

- the block length of the bootstrap is chosen on the per-day log-loss differences to the best
  baseline (Politis-White, never shorter than H) when the protocol asks for it, and recorded;
- `verdict.summarise_horizon` gives the intervals, the slope per decade and the difference to the
  best baseline on the pooled days (paired block bootstrap, seeds resampled with the days);
- per fold: every answer configuration's and baseline's AUC, log loss and Brier score, and the
  number of folds in which the answer beats the best baseline;
- on per-day losses (`comparison`): the SPA test of "some budget beats the best baseline" and the
  90% model confidence set over the budgets' answers and the baselines;
- power: the minimum detectable slope and difference (80% power, 5% level) from the bootstrap's
  standard errors, said in the sentence;
- calibration: Brier score and a reliability curve per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from coordinator.evaluation import comparison
from coordinator.evaluation.protocol import BootstrapSpec
from coordinator.evaluation.verdict import (
    BaselineScores,
    ConfigRuns,
    HorizonVerdict,
    choose_per_study,
    fmt,
    summarise_horizon,
)
from coordinator.studies.metrics import roc_auc

MCS_SIZE = 0.10  # a 90% model confidence set


@dataclass(frozen=True)
class FoldPeriod:
    number: int
    start: str  # first and last test day (ISO)
    end: str
    n_days: int  # scored days of this fold, in pooled order


@dataclass(frozen=True)
class FoldScore:
    model: str  # a study name (its answer configuration, mean over seeds) or a baseline model
    kind: str  # study | baseline
    fold: FoldPeriod
    auc: float
    log_loss: float
    brier: float


@dataclass(frozen=True)
class ModelScore:
    model: str
    kind: str  # study | baseline
    auc: float  # pooled (mean over seeds for a study)
    log_loss: float  # mean per-day loss over the pooled days
    brier: float
    in_mcs: bool
    mcs_pvalue: float | None
    reliability: list[dict[str, float]]  # [{mean_predicted, observed_rate, count}], quantile bins
    brier_reliability: float  # the Brier score's calibration part (smaller is better calibrated)


@dataclass(frozen=True)
class WalkForwardAnswer:
    verdict: HorizonVerdict
    folds: list[FoldPeriod]
    fold_scores: list[FoldScore]
    models: list[ModelScore]
    folds_won: int | None  # folds where the answer's AUC beats the best baseline's
    spa_pvalue: float | None
    spa_benchmark: str | None
    mcs: list[str] = field(default_factory=list)
    mde_slope: float | None = None
    mde_vs_baseline: float | None = None
    display: dict[str, str] = field(default_factory=dict)  # model -> its name for people (a study's budget)


def study_probabilities(config: ConfigRuns) -> np.ndarray:
    """(S, n) per-seed probabilities of one configuration."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in config.test_predictions])


def best_baseline_model(baselines: list[BaselineScores]) -> str | None:
    """The best baseline on validation (never on test); the base rate is the reference, not a contender."""
    contenders = [b for b in baselines if b.model != "base_rate"]
    return max(contenders, key=lambda b: b.val_auc).model if contenders else None


def automatic_block(labels: np.ndarray, answers: list[ConfigRuns], baselines: list[BaselineScores], horizon: int,
                    method: str) -> int:
    """Politis-White on the per-day log-loss differences of every budget's answer to the best baseline
    (the series the comparisons resample), or on all models' losses when there is no pair."""
    best = best_baseline_model(baselines)
    losses = {b.model: comparison.per_day_losses(labels, b.test_predictions)["log_loss"] for b in baselines}
    ours = [comparison.per_day_losses(labels, study_probabilities(c))["log_loss"] for c in answers]
    if best is not None and ours:
        series = np.column_stack([loss - losses[best] for loss in ours])
    else:
        series = np.column_stack(ours + list(losses.values()))
    return comparison.block_length(series, horizon, method)


def walk_forward_answer(horizon: int, labels: np.ndarray, folds: list[FoldPeriod], configs: list[ConfigRuns],
                        baselines: list[BaselineScores], bootstrap: BootstrapSpec, note: str | None = None) -> WalkForwardAnswer:
    labels = np.asarray(labels, dtype=np.float64)
    if sum(f.n_days for f in folds) != len(labels):
        raise ValueError(f"folds hold {sum(f.n_days for f in folds)} days, labels {len(labels)}")
    chosen_rank = choose_per_study(configs)
    answers = [c for c in configs if chosen_rank.get(c.study_name) == c.rank]
    block = None
    if bootstrap.block_rule == "politis-white" and (answers or baselines):
        block = automatic_block(labels, answers, baselines, horizon, bootstrap.method)
    verdict = summarise_horizon(horizon, labels, configs, baselines, bootstrap, note=note, block_length=block)

    probabilities = {c.study_name: study_probabilities(c) for c in answers} | {
        b.model: np.asarray(b.test_predictions, dtype=np.float64)[None, :] for b in baselines}
    kinds = {c.study_name: "study" for c in answers} | {b.model: "baseline" for b in baselines}
    scores = fold_scores(labels, folds, probabilities, kinds)
    best = best_baseline_model(baselines)
    answer = verdict.answer.runs.study_name if verdict.answer else None
    folds_won = None
    if answer is not None and best is not None:
        mine = {s.fold.number: s.auc for s in scores if s.model == answer}
        theirs = {s.fold.number: s.auc for s in scores if s.model == best}
        folds_won = sum(mine[f.number] > theirs[f.number] for f in folds)

    losses = {name: comparison.per_day_losses(labels, p) for name, p in probabilities.items()}
    reps, seed, method = bootstrap.replicates, bootstrap.seed, bootstrap.method
    spa_p = None
    if best is not None and answers:
        spa = comparison.spa_test(losses[best]["log_loss"], {c.study_name: losses[c.study_name]["log_loss"] for c in answers},
                                  verdict.block_length, reps, seed, benchmark=best, method=method)
        spa_p = spa.pvalue
    mcs = comparison.model_confidence_set({name: loss["log_loss"] for name, loss in losses.items()}, MCS_SIZE,
                                          block=verdict.block_length, reps=reps, seed=seed, method=method) if len(losses) > 1 else None
    auc_of = {s.runs.study_name: s.test_auc.value for s in verdict.configs if s.chosen} | {b.model: b.test_auc.value for b in verdict.baselines}
    models = []
    for name, p in probabilities.items():
        mean_p = p.mean(axis=0)
        curve = comparison.reliability_curve(labels, mean_p)
        models.append(ModelScore(
            model=name, kind=kinds[name], auc=auc_of[name], log_loss=float(losses[name]["log_loss"].mean()),
            brier=float(losses[name]["brier"].mean()), in_mcs=mcs is None or name in mcs.members,
            mcs_pvalue=None if mcs is None else float(mcs.pvalues[name]),
            reliability=[{"mean_predicted": b.mean_predicted, "observed_rate": b.observed_rate, "count": b.count} for b in curve],
            brier_reliability=comparison.brier_decomposition(labels, mean_p).reliability,
        ))
    mde_slope = detectable(verdict.slope.se) if verdict.slope else None
    d = verdict.answer.vs_best_baseline if verdict.answer else None
    mde_vs = detectable(d.se) if d else None
    result = WalkForwardAnswer(verdict, folds, scores, models, folds_won, spa_p, best,
                               list(mcs.members) if mcs else list(probabilities), mde_slope, mde_vs,
                               {c.study_name: c.budget for c in answers})
    return replace(result, verdict=replace(verdict, sentence=walk_forward_sentence(result)))


def detectable(se: float | None) -> float | None:
    return comparison.minimum_detectable_effect(se) if se is not None and np.isfinite(se) else None


def fold_scores(labels: np.ndarray, folds: list[FoldPeriod], probabilities: dict[str, np.ndarray],
                kinds: dict[str, str]) -> list[FoldScore]:
    """Every model's AUC (mean over seeds), log loss and Brier score on each fold's days."""
    scores, start = [], 0
    for fold in folds:
        days = slice(start, start + fold.n_days)
        start += fold.n_days
        y = labels[days]
        for name, p in probabilities.items():
            both = 0 < y.sum() < len(y)
            auc = float(np.mean([roc_auc(y, seed[days]) for seed in p])) if both else float("nan")
            loss = comparison.per_day_losses(y, p[:, days])
            scores.append(FoldScore(name, kinds[name], fold, auc, float(loss["log_loss"].mean()), float(loss["brier"].mean())))
    return scores


def walk_forward_sentence(a: WalkForwardAnswer) -> str:
    """The verdict's sentence, then what the walk-forward adds: folds, power, SPA and MCS."""
    parts = [a.verdict.sentence.rstrip(".")]
    power = []
    if a.mde_slope is not None:
        power.append(f"a slope of {fmt(a.mde_slope)} per decade or more would have been detected")
    if a.mde_vs_baseline is not None:
        power.append(f"a difference to the baseline of {fmt(a.mde_vs_baseline)} or more would have been detected")
    if power:
        parts.append(" and ".join(power) + " (80% power, 5% level)")
    tail = [f"{a.verdict.n_test} test days pooled over {len(a.folds)} walk-forward folds"]
    if a.folds_won is not None:
        tail.append(f"the answer beats the best baseline in {a.folds_won} of {len(a.folds)} folds")
    if a.spa_pvalue is not None:
        tail.append(f"SPA p = {a.spa_pvalue:.3f} for some budget beating the {a.spa_benchmark} baseline on log loss")
    if a.mcs:
        tail.append(f"90% model confidence set: {', '.join(a.display.get(m, m) for m in a.mcs)}")
    return "; ".join(parts) + ". " + "; ".join(tail) + "."
