"""Planning a study matrix (budgets x horizons) on one dataset version, writing nothing.

Every gate runs here, before anything is written: the dataset version and its hash, the split
gates for every horizon, a feasible architecture for every budget, and that no existing study of
the same name has a different spec. coordinator.lifecycle.registration then creates the new ones.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from coordinator.data.registry import load_dataset
from coordinator.data.labels import THRESHOLD
from coordinator.data.samples import CONTEXT, make_samples
from coordinator.data.splits import default_splits
from coordinator.errors import UserError
from coordinator.store import tables
from coordinator.studies.datasets import resolve_dataset
from coordinator.studies.presets import MAX_HORIZON, MAX_SEED, MAX_TRIALS, PRESETS, search_space
from coordinator.studies.search_space import budget_label, extreme_params, feasible_architectures, parse_budget
from coordinator.studies.spec import (
    OBJECTIVES,
    PRUNERS,
    BudgetSpec,
    DatasetRef,
    LabelSpec,
    LimitsSpec,
    ObjectiveSpec,
    SamplerSpec,
    StudySpec,
    study_name,
)
from coordinator.version import code_version


@dataclass(frozen=True)
class PlannedStudy:
    spec: StudySpec
    n_feasible: int  # grid architectures within the budget's tolerance
    extremes: list[dict[str, int]]  # architecture params enqueued as the first trials
    samples: dict[str, int]  # split -> number of samples at this horizon
    val_positive_rate: float
    status: str = "new"  # new | unchanged


@dataclass(frozen=True)
class MatrixRequest:
    dataset: str | None = None  # NAME[:VERSION]; None: the only registered dataset (refused when several)
    budgets: tuple[str, ...] | None = None  # None: the preset's
    horizons: tuple[int, ...] | None = None
    trials: int | None = None
    objective: str = "val_auc"
    seed: int = 1
    preset: str = "default"
    pruner: str | None = None
    suffix: str | None = None  # appended to every study name, for a second matrix beside the first
    limits: LimitsSpec = LimitsSpec()  # stall timeout and wall-clock limit of every attempt
    keep_checkpoints: bool = False  # store every COMPLETE trial's best-epoch weights (recorded in the spec)


def plan_studies(engine: sa.Engine, request: MatrixRequest) -> list[PlannedStudy]:
    """Build every study's spec and run every gate; writes nothing. Raises UserError on a gate."""
    if request.preset not in PRESETS:
        raise UserError(f"unknown preset '{request.preset}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[request.preset]
    if request.objective not in OBJECTIVES:
        raise UserError(f"unknown objective '{request.objective}'; choose one of {', '.join(OBJECTIVES)}")
    pruner = preset.pruner if request.pruner is None else dataclasses.replace(preset.pruner, kind=request.pruner)
    if pruner.kind not in PRUNERS:
        raise UserError(f"unknown pruner '{pruner.kind}'; choose one of {', '.join(PRUNERS)}")
    trials = preset.trials if request.trials is None else request.trials
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials must be between 1 and {MAX_TRIALS:,}, got {trials:,}")
    if not 0 <= request.seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {request.seed}")
    budgets = unique(parse_budget(b) for b in (preset.budgets if request.budgets is None else request.budgets))
    horizons = unique(preset.horizons if request.horizons is None else request.horizons)
    if not budgets or not horizons:
        raise UserError("need at least one budget and one horizon")
    if request.suffix is not None and not re.fullmatch(r"[A-Za-z0-9_.]+", request.suffix):
        raise UserError(f"bad --suffix '{request.suffix}': letters, digits, '_' and '.' only")
    bad = [h for h in horizons if not 1 <= h <= MAX_HORIZON]
    if bad:
        raise UserError(f"horizons must be between 1 and {MAX_HORIZON} trading days, got {', '.join(map(str, bad))}")

    ref = resolve_dataset(engine, request.dataset)
    dataset = load_dataset(engine, ref.name, ref.version)
    splits = default_splits(dataset.frame.index)
    samples = {h: make_samples(dataset, h, splits, context=CONTEXT, threshold=THRESHOLD) for h in horizons}
    spaces = {b: search_space(b, len(dataset.input_columns), preset) for b in budgets}

    plans = []
    for budget in budgets:
        space = spaces[budget]
        label = budget_label(budget)
        for horizon in horizons:
            spec = StudySpec(
                name=study_name(dataset.name, THRESHOLD, label, horizon) + (f"-{request.suffix}" if request.suffix else ""),
                dataset=DatasetRef(dataset.name, dataset.version, dataset.sha256),
                label=LabelSpec("threshold", THRESHOLD, horizon),
                splits=splits.to_dict(),
                context=CONTEXT,
                budget=BudgetSpec(label, budget, space.tolerance),
                search_space=space.to_dict(),
                objective=ObjectiveSpec(request.objective, OBJECTIVES[request.objective]),
                sampler=SamplerSpec("tpe", request.seed),
                pruner=pruner,
                target_trials=trials,
                code_version=code_version(),
                limits=request.limits,
                keep_checkpoints=request.keep_checkpoints,
            )
            s = samples[horizon]
            plans.append(
                PlannedStudy(
                    spec=spec,
                    n_feasible=len(feasible_architectures(space)),
                    extremes=extreme_params(space)[:trials],
                    samples={split: len(positions) for split, positions in s.index.items()},
                    val_positive_rate=s.positive_rate("val"),
                )
            )
    return check_existing(engine, plans)


def unique(values: Any) -> tuple:
    return tuple(dict.fromkeys(values))


def check_existing(engine: sa.Engine, plans: list[PlannedStudy]) -> list[PlannedStudy]:
    """Mark studies that already exist with the same spec; refuse any that exist with another spec."""
    t = tables.study_specs
    with engine.connect() as conn:
        stored = {
            row.study_name: row
            for row in conn.execute(
                sa.select(t.c.study_name, t.c.spec, t.c.spec_sha256).where(t.c.study_name.in_([p.spec.name for p in plans]))
            )
        }
    checked = []
    for plan in plans:
        row = stored.get(plan.spec.name)
        if row is None:
            checked.append(plan)
            continue
        if row.spec_sha256 != plan.spec.sha256():
            changed = plan.spec.differences(StudySpec.from_dict(row.spec))
            raise UserError(
                f"study {plan.spec.name} already exists with a different spec (differs in: {', '.join(changed)}); "
                "a study's spec is immutable: keep the original flags, or add --suffix TAG to create new studies beside it"
            )
        checked.append(dataclasses.replace(plan, status="unchanged"))
    return checked


