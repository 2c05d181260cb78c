"""Walk-forward evaluation runs -> the pooled answer of one dataset version and horizon.

For studies evaluated under a walk-forward protocol: the frozen folds of each study (the same for
every study of a horizon, or refused), every configuration's runs (one per seed and fold, each
scored on its fold's days: checked), and every baseline re-fitted for each fold on the fold's
training samples (fixed hyperparameters, nothing tuned, so the same days the transformers train
on). Their test predictions, concatenated fold after fold, are the pooled test days that
`walkforward.walk_forward_answer` summarises. Baselines are ranked by their validation AUC on the
study's own validation split (the `baselines` table), never on a fold.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from coordinator.data.folds import Fold, fold_samples
from coordinator.data.samples import Samples
from coordinator.errors import UserError
from coordinator.evaluation.baselines import compute_baselines
from coordinator.evaluation.protocol import EvaluationProtocol
from coordinator.evaluation.verdict import BaselineScores, ConfigRuns
from coordinator.evaluation.walkforward import FoldPeriod, WalkForwardAnswer, walk_forward_answer
from coordinator.studies.spec import StudySpec

Row = Any  # a mapping row of evaluation_protocols joined with study_specs, or of evaluation_runs


def shared_folds(rows: list[Row]) -> list[Fold]:
    """The folds every study of the horizon was frozen with (refused when they differ)."""
    cuts = {json.dumps(r["folds"], sort_keys=True) for r in rows}
    if len(cuts) != 1 or not rows[0]["folds"]:
        raise UserError(f"studies {', '.join(sorted(r['study_name'] for r in rows))} were frozen with different test folds "
                        "(different splits?): their pooled days are not comparable")
    return [Fold.from_dict(f) for f in rows[0]["folds"]]


def fold_runs(row: Row, configuration: dict[str, Any], runs: list[Row], protocol: EvaluationProtocol,
              fold_positions: list[list[int]]) -> list[np.ndarray] | None:
    """Per seed, the configuration's predictions on the pooled days; None until every (seed, fold) is stored."""
    by_key = {(r["seed"], r["fold"]): r for r in runs if r["protocol_sha256"] == row["protocol_sha256"]}
    pooled = []
    for seed in protocol.seeds:
        parts = []
        for number, positions in enumerate(fold_positions, start=1):
            run = by_key.get((seed, number))
            if run is None:
                return None
            if list(run["test_positions"]) != positions:
                raise UserError(f"evaluation run {row['study_name']} rank {configuration['rank']} seed {seed} fold {number} "
                                "was scored on other test days than its fold's")
            parts.append(np.asarray(run["test_predictions"], dtype=np.float64))
        pooled.append(np.concatenate(parts))
    return pooled


def fold_baselines(samples: Samples, folds: list[Fold], val_auc: dict[str, float]) -> list[BaselineScores]:
    """Every baseline re-fitted for each fold; its fold predictions concatenated in pooled order."""
    predictions: dict[str, list[np.ndarray]] = defaultdict(list)
    for fold in folds:
        for result in compute_baselines(fold_samples(samples, fold)):
            predictions[result["model"]].append(np.asarray(result["test_predictions"], dtype=np.float64))
    return [BaselineScores(model, val_auc[model], np.concatenate(parts)) for model, parts in predictions.items()]


def walk_forward_horizon(samples: Samples, rows: list[Row], runs_by: dict[tuple[str, int], list[Row]], protocol: EvaluationProtocol,
                         val_auc: dict[str, float], note: str | None) -> tuple[WalkForwardAnswer, int, int]:
    """(the answer, runs missing, runs in all) of one horizon's walk-forward studies."""
    folds = shared_folds(rows)
    per_fold = [fold_samples(samples, f) for f in folds]
    fold_positions = [s.index["test"].tolist() for s in per_fold]
    periods = [FoldPeriod(f.number, f.test[0], f.test[1], len(p)) for f, p in zip(folds, fold_positions, strict=True)]
    configs, total, missing = [], 0, 0
    for row in rows:
        direction = StudySpec.from_dict(row["spec"]).objective.direction
        for c in row["configurations"]:
            runs = runs_by[(row["study_name"], c["rank"])]
            total += protocol.n_seeds * protocol.n_folds
            stored = sum(1 for r in runs if r["protocol_sha256"] == row["protocol_sha256"])
            missing += protocol.n_seeds * protocol.n_folds - stored
            pooled = fold_runs(row, c, runs, protocol, fold_positions)
            if pooled is None:
                continue
            first_fold = sorted((r for r in runs if r["fold"] == 1), key=lambda r: r["seed"])
            configs.append(ConfigRuns(
                study_name=row["study_name"], budget=row["budget"], budget_params=row["budget_params"], rank=c["rank"],
                trial_number=c["trial_number"], n_params=int(runs[0]["n_params"]), direction=direction,
                # The answer is chosen on validation: fold 1 early-stops on the search's validation split.
                val_objective=[float(r["objective_value"]) for r in first_fold],
                test_predictions=pooled,
                under_trained=sum(r["best_epoch"] == r["epochs_run"] for r in runs),
            ))
    labels = np.concatenate([samples.labels[s.index["test"]] for s in per_fold]).astype(np.float64)
    baselines = fold_baselines(samples, folds, val_auc)
    if missing:
        note = "; ".join(x for x in (note, f"{missing} of {total} evaluation runs are not finished yet: partial answer") if x)
    answer = walk_forward_answer(samples.horizon, labels, periods, configs, baselines, protocol.bootstrap, note=note)
    return answer, missing, total
