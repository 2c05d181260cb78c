"""Pruners built from the study spec: old specs keep their hash, ASHA and Hyperband keep their settings
and decide like Optuna's, and the best objective so far is what they judge."""

from __future__ import annotations

import hashlib

import optuna
import pytest

from coordinator.lifecycle import optuna_adapter
from coordinator.studies.spec import PRUNERS, PrunerSpec, StudySpec, canonical_json, pruner_spec

OLD_SPEC = {  # a spec as stored before asha and hyperband existed (no resource settings)
    "name": "syn-a25-thr1pct-100K-h1",
    "dataset": {"name": "syn-a25", "version": 1, "sha256": "ab" * 32},
    "label": {"kind": "threshold", "threshold": 0.01, "horizon": 1},
    "splits": {"train": ["2000-01-03", "2005-12-30"], "val": ["2006-01-02", "2007-06-29"], "test": ["2007-07-02", "2008-12-31"]},
    "context": 60,
    "budget": {"label": "100K", "params": 100000, "tolerance": 0.25},
    "search_space": {"budget_params": 100000, "n_features": 25},
    "objective": {"metric": "val_auc", "direction": "maximize"},
    "sampler": {"kind": "tpe", "seed": 1},
    "pruner": {"kind": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
    "target_trials": 3,
    "code_version": "0.1.0+abc",
}


def test_old_specs_load_and_hash_as_before() -> None:
    spec = StudySpec.from_dict(OLD_SPEC)
    before = {k: v for k, v in OLD_SPEC.items() if k != "code_version"}
    assert spec.sha256() == hashlib.sha256(canonical_json(before).encode()).hexdigest()
    assert spec.pruner == pruner_spec("median", 30)  # what create-studies still writes for median
    assert StudySpec.from_dict(spec.to_dict()).sha256() == spec.sha256()


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_resource_settings_are_part_of_the_spec(kind: str) -> None:
    pruner = pruner_spec(kind, 30)
    assert pruner.settings() == {"kind": kind, "min_resource": 2, "reduction_factor": 3, "max_resource": 30, "bootstrap_count": 0}
    spec = StudySpec.from_dict({**OLD_SPEC, "pruner": pruner.settings()})
    assert spec.to_dict()["pruner"]["max_resource"] == 30
    assert StudySpec.from_dict(spec.to_dict()) == spec
    other = StudySpec.from_dict({**OLD_SPEC, "pruner": pruner_spec(kind, 15).settings()})
    assert other.sha256() != spec.sha256() and other.differences(spec) == ["pruner"]


def test_every_kind_builds_its_optuna_pruner() -> None:
    made = {kind: pruner_spec(kind, 12).make() for kind in PRUNERS}
    assert isinstance(made["none"], optuna.pruners.NopPruner)
    assert isinstance(made["median"], optuna.pruners.MedianPruner)
    assert isinstance(made["asha"], optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(made["hyperband"], optuna.pruners.HyperbandPruner)
    with pytest.raises(ValueError, match="unknown pruner kind 'bohb'"):
        PrunerSpec("bohb").make()


def run_curve(study: optuna.Study, curve: list[float], last_epoch: int) -> tuple[str, int]:
    """One trial through the product's epoch reports: (state, epochs it ran)."""
    trial = study.ask()
    reports = optuna_adapter.EpochReports(trial, "maximize", last_epoch)
    for epoch, value in enumerate(curve, start=1):
        if reports.epoch(value, epoch):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return "PRUNED", epoch
    study.tell(trial, max(curve))
    return "COMPLETE", len(curve)


def test_asha_keeps_the_best_third_at_each_rung() -> None:
    study = optuna.create_study(direction="maximize", pruner=pruner_spec("asha", 12).make())
    # Rungs after 2 and 6 epochs; a trial goes on only if it is in the best third of those at the rung.
    assert run_curve(study, [0.55, 0.60, 0.61, 0.62, 0.63, 0.64, 0.65], 12) == ("COMPLETE", 7)  # alone at each rung
    assert run_curve(study, [0.54, 0.58, 0.70], 12) == ("PRUNED", 2)  # 0.58 < 0.60 at epoch 2
    # A dip after a good epoch is not held against a trial: it is judged on its best so far (0.61 at epoch 2).
    assert run_curve(study, [0.61, 0.52, 0.62, 0.62, 0.62, 0.59], 12) == ("PRUNED", 6)  # 0.62 < 0.64 at epoch 6
    assert run_curve(study, [0.61, 0.52, 0.62, 0.66, 0.66, 0.66, 0.66], 12) == ("COMPLETE", 7)
    # Never asked after the schedule's last epoch: a trial that ran its full schedule stays COMPLETE.
    assert run_curve(study, [0.50, 0.50], 2) == ("COMPLETE", 2)
