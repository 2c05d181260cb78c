"""Planning a study matrix (budgets x horizons) on one dataset version, writing nothing.

Every gate runs here, before anything is written: the dataset version and its hash, the split
gates for every horizon, a feasible architecture for every budget, the objectives and the pruner
(none for a multi-objective study), the warm-start configurations (coordinator.studies.warm_start),
and that no existing study of the same name has a different spec. coordinator.lifecycle.registration then creates the new ones.
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
from coordinator.studies import warm_start
from coordinator.studies.presets import (
    MAX_HORIZON,
    MAX_SEED,
    MAX_TRIALS,
    PRESETS,
    WARM_START_TOP,
    Preset,
    schedule_epochs,
    search_space,
)
from coordinator.studies.search_space import budget_label, extreme_params, feasible_architectures, parse_budget
from coordinator.studies.spec import (
    OBJECTIVES,
    PRUNERS,
    SECONDARY_OBJECTIVES,
    BudgetSpec,
    DatasetRef,
    LabelSpec,
    LimitsSpec,
    ObjectiveSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    pruner_spec,
    study_name,
)
from coordinator.version import code_version


@dataclass(frozen=True)
class PlannedStudy:
    spec: StudySpec
    n_feasible: int  # grid architectures within the budget's tolerance
    extremes: list[dict[str, int]]  # architecture params enqueued as the first trials (after any warm start)
    samples: dict[str, int]  # split -> number of samples at this horizon
    val_positive_rate: float
    status: str = "new"  # new | unchanged

    @property
    def fixed_params(self) -> list[dict[str, Any]]:
        """The parameters of the first slots: the warm-start configurations, then the extremes."""
        warm = [dict(t["params"]) for t in self.spec.warm_start.trials] if self.spec.warm_start else []
        return (warm + list(self.extremes))[: self.spec.target_trials]


@dataclass(frozen=True)
class MatrixRequest:
    dataset: str | None = None  # NAME[:VERSION]; None: the only registered dataset (refused when several)
    budgets: tuple[str, ...] | None = None  # None: the preset's
    horizons: tuple[int, ...] | None = None
    trials: int | None = None
    objective: str = "val_auc"
    objectives: tuple[str, ...] | None = None  # several: a multi-objective study (`--objectives val_auc,n_params`)
    seed: int = 1
    preset: str = "default"
    pruner: str | None = None
    suffix: str | None = None  # appended to every study name, for a second matrix beside the first
    limits: LimitsSpec = LimitsSpec()  # stall timeout and wall-clock limit of every attempt
    warm_start_from: str | None = None  # globs of earlier studies whose best configurations go first
    warm_start_top: int | None = None  # how many of them per study (default WARM_START_TOP)
    keep_checkpoints: bool = False  # store every COMPLETE trial's best-epoch weights (recorded in the spec)


@dataclass(frozen=True)
class Settings:
    """A request's values, checked, with the preset's defaults filled in."""

    preset: Preset
    objective: ObjectiveSpec
    extra_objectives: list[ObjectiveSpec]
    pruner: PrunerSpec
    trials: int
    budgets: tuple[int, ...]
    horizons: tuple[int, ...]


def check_request(request: MatrixRequest) -> Settings:
    """Every flag range-checked before anything is read or written; UserError on the first bad one."""
    if request.preset not in PRESETS:
        raise UserError(f"unknown preset '{request.preset}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[request.preset]
    objective, extra = check_objectives(request)
    kind = ("none" if extra else preset.pruner) if request.pruner is None else request.pruner
    if kind not in PRUNERS:
        raise UserError(f"unknown pruner '{kind}'; choose one of {', '.join(PRUNERS)}")
    if extra and kind != "none":
        raise UserError(f"--pruner {kind} does not apply to multi-objective studies (Optuna prunes on one objective); use --pruner none")
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
    if request.warm_start_from is None and request.warm_start_top is not None:
        raise UserError("--top needs --warm-start-from")
    return Settings(preset, objective, extra, pruner_spec(kind, schedule_epochs(preset)), trials, budgets, horizons)


def check_objectives(request: MatrixRequest) -> tuple[ObjectiveSpec, list[ObjectiveSpec]]:
    """The study's objective and any further ones (`--objectives val_auc,n_params`); UserError for bad names."""
    names = request.objectives or (request.objective,)
    first, rest = names[0], names[1:]
    if first not in OBJECTIVES:
        raise UserError(f"unknown objective '{first}': the first objective is one of {', '.join(OBJECTIVES)}")
    if request.objectives and request.objective not in (first, "val_auc"):
        raise UserError(f"--objective {request.objective} and --objectives {','.join(names)} disagree: give one of them")
    bad = [name for name in rest if name not in SECONDARY_OBJECTIVES]
    if bad:
        raise UserError(f"unknown objective '{bad[0]}' after the first; choose from {', '.join(SECONDARY_OBJECTIVES)}")
    if len(set(rest)) != len(rest):
        raise UserError(f"--objectives lists an objective twice: {','.join(names)}")
    return ObjectiveSpec(first, OBJECTIVES[first]), [ObjectiveSpec(name, SECONDARY_OBJECTIVES[name]) for name in rest]


def plan_studies(engine: sa.Engine, request: MatrixRequest) -> list[PlannedStudy]:
    """Build every study's spec and run every gate; writes nothing. Raises UserError on a gate."""
    settings = check_request(request)
    ref = resolve_dataset(engine, request.dataset)
    candidates = None if request.warm_start_from is None else warm_start.load_candidates(engine, request.warm_start_from)
    top = WARM_START_TOP if request.warm_start_top is None else request.warm_start_top
    dataset = load_dataset(engine, ref.name, ref.version)
    splits = default_splits(dataset.frame.index, val_frac=settings.preset.splits.val, test_frac=settings.preset.splits.test)
    samples = {h: make_samples(dataset, h, splits, context=CONTEXT, threshold=THRESHOLD) for h in settings.horizons}
    spaces = {b: search_space(b, len(dataset.input_columns), settings.preset) for b in settings.budgets}

    plans = []
    for budget in settings.budgets:
        space = spaces[budget]
        label = budget_label(budget)
        for horizon in settings.horizons:
            spec = StudySpec(
                name=study_name(dataset.name, THRESHOLD, label, horizon) + (f"-{request.suffix}" if request.suffix else ""),
                dataset=DatasetRef(dataset.name, dataset.version, dataset.sha256),
                label=LabelSpec("threshold", THRESHOLD, horizon),
                splits=splits.to_dict(),
                context=CONTEXT,
                budget=BudgetSpec(label, budget, space.tolerance),
                search_space=space.to_dict(),
                objective=settings.objective,
                sampler=SamplerSpec("tpe", request.seed),
                pruner=settings.pruner,
                target_trials=settings.trials,
                code_version=code_version(),
                limits=request.limits,
                extra_objectives=settings.extra_objectives,
                keep_checkpoints=request.keep_checkpoints,
            )
            if candidates is not None:
                spec = dataclasses.replace(spec, warm_start=warm_start.choose(candidates, spec, request.warm_start_from, top))
            s = samples[horizon]
            plans.append(
                PlannedStudy(
                    spec=spec,
                    n_feasible=len(feasible_architectures(space)),
                    extremes=extreme_params(space)[: settings.trials],
                    samples={split: len(positions) for split, positions in s.index.items()},
                    val_positive_rate=s.positive_rate("val"),
                )
            )
    return check_existing(engine, plans)


def unique(values: Any) -> tuple:
    return tuple(dict.fromkeys(values))


def check_existing(engine: sa.Engine, plans: list[PlannedStudy]) -> list[PlannedStudy]:
    """Mark studies that already exist with the same spec; refuse any that exist with another spec.

    A study that differs only in its splits was created under an earlier preset's split fractions:
    it keeps its own spec (and its results), and is resumed as it is."""
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
        existing = StudySpec.from_dict(row.spec)
        if row.spec_sha256 != plan.spec.sha256() and plan.spec.differences(existing) == ["splits"]:
            checked.append(dataclasses.replace(plan, spec=existing, status="unchanged"))
            continue
        if row.spec_sha256 != plan.spec.sha256():
            changed = plan.spec.differences(existing)
            raise UserError(
                f"study {plan.spec.name} already exists with a different spec (differs in: {', '.join(changed)}); "
                "a study's spec is immutable: keep the original flags, or add --suffix TAG to create new studies beside it"
            )
        checked.append(dataclasses.replace(plan, status="unchanged"))
    return checked


